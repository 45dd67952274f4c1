package badinput

import (
	"encoding/json"
	"slices"
	"testing"
)

// secretVars are the Secret-typed variables of each connector (config.Secret fields). sqs-source and
// pubsub-source have none: their credentials are read by the SDKs (AWS_SECRET_ACCESS_KEY,
// GOOGLE_APPLICATION_CREDENTIALS), and the tests give those the sentinel instead.
var secretVars = map[string][]string{
	sqsSource:    nil,
	pubsubSource: nil,
	redisSource:  {"REDIS_URL", "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"},
	mqttSource:   {"MQTT_PASSWORD"},
	rabbitSource: {"RABBITMQ_URL"},
}

// --help and --env-json never print a secret, even with every secret set in the environment, and
// --env-json marks exactly the Secret-typed variables as secret.
func TestHelpAndEnvJSONNeverPrintSecrets(t *testing.T) {
	for _, c := range connectors {
		t.Run(c, func(t *testing.T) {
			ln := newCountingListener(t)
			dir := shortDir(t)
			env := baseEnv(t, c, ln.addr, dir)
			if c == redisSource {
				env["REDIS_PASSWORD"] = sentinel
			}
			for _, flag := range []string{"--help", "--env-json"} {
				code, stdout, stderr, _ := runConfig(t, c, env, []string{flag})
				if code != 0 {
					t.Fatalf("%s: exit status %d\n%s%s", flag, code, stdout, stderr)
				}
				assertNoSentinel(t, flag, stdout+stderr)
				if flag != "--env-json" {
					continue
				}
				var vars []struct {
					Name   string `json:"name"`
					Secret bool   `json:"secret"`
				}
				if err := json.Unmarshal([]byte(stdout), &vars); err != nil {
					t.Fatalf("--env-json: %v\n%s", err, stdout)
				}
				var secret []string
				for _, v := range vars {
					if v.Secret {
						secret = append(secret, v.Name)
					}
				}
				slices.Sort(secret)
				want := slices.Clone(secretVars[c])
				slices.Sort(want)
				if !slices.Equal(secret, want) {
					t.Errorf("--env-json marks %v as secret, want %v", secret, want)
				}
			}
			if n := ln.Count(); n != 0 {
				t.Errorf("--help or --env-json made %d connection(s) to the broker address", n)
			}
		})
	}
}
