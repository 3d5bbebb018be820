package backoff

import (
	"testing"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }
