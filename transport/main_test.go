package transport_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}
