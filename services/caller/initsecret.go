package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/app"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/internal/secretinit"
)

// initSecret is `caller init-secret`, the Helm chart's hook Job: it creates
// the Secret SECRET_NAME (in the pod's namespace) with a random token under
// SECRET_KEY ("token" by default) and the labels in SECRET_LABELS
// (k=v,k=v), unless that Secret exists, which it keeps.
func initSecret() int {
	name, key := os.Getenv("SECRET_NAME"), os.Getenv("SECRET_KEY")
	if key == "" {
		key = "token"
	}
	labels := map[string]string{}
	for _, kv := range strings.Split(os.Getenv("SECRET_LABELS"), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" {
			labels[k] = v
		}
	}
	if name == "" {
		fmt.Fprintln(os.Stderr, `caller init-secret: invalid SECRET_NAME="": must name the Secret to create`)
		return app.ExitConfig
	}
	log, _ := obs.NewLogger(os.Stdout, "info", "json")
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("secret", name), zap.String("key", key))
	cluster, err := secretinit.InCluster()
	if err != nil {
		log.Error("init-secret failed", zap.Error(err))
		return app.ExitFailed
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created, err := secretinit.Ensure(ctx, cluster, secretinit.Secret{Name: name, Key: key, Labels: labels})
	switch {
	case err != nil:
		log.Error("init-secret failed", zap.Error(err))
		return app.ExitFailed
	case created:
		log.Info("secret created with a new random token", zap.Int("bits", 8*secretinit.TokenBytes))
	default:
		log.Info("secret exists; kept as it is")
	}
	return app.ExitOK
}
