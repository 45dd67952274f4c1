package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestVars(t *testing.T) {
	want := []Var{
		{Name: "S_URL", Required: true, Description: "Broker URL.", Field: "sample.URL"},
		{Name: "S_WAIT", Default: "20s", Description: "Long-poll wait.", Field: "sample.Wait"},
		{Name: "S_BATCH", Default: "10", Description: "Batch size, 1 to 10.", Field: "sample.Batch", Min: "1", Max: "10"},
		{Name: "S_PASSWORD", Secret: true, Description: "Password.", Field: "sample.Password"},
		{Name: "S_TOKEN", Required: true, Secret: true, Description: "API token.", Field: "sample.Token"},
		{Name: "S_STREAMS", Default: "a,b", Description: "Streams to read.", Field: "sample.Streams"},
		{Name: "S_TLS_CA_FILE", Description: "CA bundle path.", Field: "sample.TLS.CAFile"},
		{Name: "S_TLS_INSECURE", Default: "false", Description: "Skip certificate verification.", Field: "sample.TLS.Insecure"},
	}
	for _, cfg := range []any{sample{}, &sample{}} {
		if got := Vars(cfg); !reflect.DeepEqual(got, want) {
			t.Errorf("Vars(%T) =\n%+v\nwant\n%+v", cfg, got, want)
		}
	}
	// Common embeds Platform: its variables come last, unprefixed.
	vs := Vars(Common{})
	if vs[0].Name != "LOG_LEVEL" || vs[len(vs)-1].Name != "NUMAFLOW_UD_CONTAINER_TYPE" {
		t.Errorf("Vars(Common{}) = %v", vs)
	}
}

func TestNameParts(t *testing.T) {
	for _, c := range []struct {
		p    Platform
		want string
	}{
		{Platform{Namespace: "prod", Pipeline: "orders", Vertex: "in"}, "prod orders in"},
		{Platform{Namespace: "prod", MonoVertex: "alarms"}, "prod alarms"},
		{Platform{}, ""},
	} {
		if got := strings.Join(c.p.NameParts(), " "); got != c.want {
			t.Errorf("NameParts of %+v = %q, want %q", c.p, got, c.want)
		}
	}
}
