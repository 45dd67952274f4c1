// Package observability holds no code: its tests check the Grafana dashboard (dashboard.json) and the
// PrometheusRule (prometheusrule.yaml) beside them against what the connector binaries export.
package observability
