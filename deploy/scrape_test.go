package deploy_test

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/numaproj/numaflow/pkg/apis/numaflow/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The scraping components every base can be built with (deploy/components).
var scrapeComponents = []string{"components/podmonitor", "components/prometheus-annotations"}

// podMonitor is the part of a Prometheus Operator PodMonitor these checks read. deploy/observability
// decodes components/podmonitor strictly against the operator's own Go types and runs its relabelings
// through Prometheus's relabel package.
type podMonitor struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Path        string `json:"path"`
			Relabelings []struct {
				Action       string   `json:"action"`
				SourceLabels []string `json:"sourceLabels"`
				Regex        string   `json:"regex"`
				TargetLabel  string   `json:"targetLabel"`
				Replacement  *string  `json:"replacement"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// scrapedPod is a pod Numaflow would create for a vertex or a MonoVertex: its labels (the spec's plus
// the ones Numaflow sets) and annotations.
type scrapedPod struct {
	what        string
	source      bool // runs the connector's udsource container
	labels      map[string]string
	annotations map[string]string
	container   *v1alpha1.Container
}

// pods lists the pods r's Pipelines and MonoVertex objects would run, labelled as Numaflow v1.3.1's
// controllers label them.
func pods(r *rendered) []scrapedPod {
	var out []scrapedPod
	meta := func(m *v1alpha1.Metadata) (map[string]string, map[string]string) {
		l, a := map[string]string{}, map[string]string{}
		if m != nil {
			for k, v := range m.Labels {
				l[k] = v
			}
			for k, v := range m.Annotations {
				a[k] = v
			}
		}
		return l, a
	}
	for _, p := range r.pipelines {
		for _, v := range p.Spec.Vertices {
			l, a := meta(v.Metadata)
			l[v1alpha1.KeyPartOf] = v1alpha1.Project
			l[v1alpha1.KeyComponent] = v1alpha1.ComponentVertex
			l[v1alpha1.KeyAppName] = p.Name + "-" + v.Name
			l[v1alpha1.KeyPipelineName] = p.Name
			l[v1alpha1.KeyVertexName] = v.Name
			sp := scrapedPod{what: "pipeline " + p.Name + ", vertex " + v.Name, labels: l, annotations: a}
			if v.Source != nil && v.Source.UDSource != nil && v.Source.UDSource.Container != nil {
				sp.source, sp.container = true, v.Source.UDSource.Container
			}
			out = append(out, sp)
		}
	}
	for _, m := range r.monoVertex {
		l, a := meta(m.Spec.Metadata)
		l[v1alpha1.KeyPartOf] = v1alpha1.Project
		l[v1alpha1.KeyComponent] = v1alpha1.ComponentMonoVertex
		l[v1alpha1.KeyAppName] = m.Name
		l[v1alpha1.KeyMonoVertexName] = m.Name
		sp := scrapedPod{what: "monovertex " + m.Name, labels: l, annotations: a}
		if m.Spec.Source != nil && m.Spec.Source.UDSource != nil && m.Spec.Source.UDSource.Container != nil {
			sp.source, sp.container = true, m.Spec.Source.UDSource.Container
		}
		out = append(out, sp)
	}
	return out
}

// renderWith builds dir with the given components (paths relative to deploy/) in a throwaway overlay.
func renderWith(t rep, dir string, components ...string) *rendered {
	t.Helper()
	tmp, err := os.MkdirTemp("", "deploy-scrape-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer os.RemoveAll(tmp)
	// kustomize takes no absolute paths: relative ones from the throwaway overlay.
	rel := func(p string) string {
		a, err := filepath.Abs(p)
		if err == nil {
			a, err = filepath.Rel(tmp, a)
		}
		if err != nil {
			t.Fatalf("%v", err)
		}
		return a
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + rel(dir) + "\ncomponents:\n"
	for _, c := range components {
		k += "  - " + rel(c) + "\n"
	}
	if err := os.WriteFile(filepath.Join(tmp, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	return render(t, tmp)
}

// metaLabel is the name Prometheus's Kubernetes discovery gives pod label key.
func metaLabel(key string) string {
	return "__meta_kubernetes_pod_label_" + notLabelChar.ReplaceAllString(key, "_")
}

var notLabelChar = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// checkScraping builds dir with both scraping components and checks that the PodMonitor selects the
// pods of the connector's udsource (and no other pod of the base), scrapes the udsource container on the
// port of its METRICS_ADDR and gives each series the connector, pipeline and vertex labels; and that
// the annotations land on those pods with the same port.
func checkScraping(t rep, dir, connector string) {
	t.Helper()
	r := renderWith(t, dir, scrapeComponents...)
	if len(r.podMonitor) != 1 {
		t.Fatalf("%s with %v renders %d PodMonitor objects, want 1", dir, scrapeComponents, len(r.podMonitor))
	}
	pm := r.podMonitor[0]
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatalf("PodMonitor %s: selector: %v", pm.Metadata.Name, err)
	}
	if sel.Empty() {
		t.Errorf("PodMonitor %s selects every pod of the namespace", pm.Metadata.Name)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor %s has %d podMetricsEndpoints, want 1", pm.Metadata.Name, len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	keepsUdsource, addrPort := false, ""
	targets := map[string][]string{} // target label -> source labels
	for _, rl := range ep.Relabelings {
		action := rl.Action
		if action == "" {
			action = "replace"
		}
		switch {
		case action == "keep" && len(rl.SourceLabels) == 1 && rl.SourceLabels[0] == "__meta_kubernetes_pod_container_name":
			re, err := regexp.Compile("^(?:" + rl.Regex + ")$")
			if err != nil {
				t.Errorf("PodMonitor %s: keep regex %q: %v", pm.Metadata.Name, rl.Regex, err)
				continue
			}
			keepsUdsource = re.MatchString(v1alpha1.CtrUdsource) && !re.MatchString(v1alpha1.CtrMain)
		case action == "replace" && rl.TargetLabel == "__address__" && rl.Replacement != nil:
			if i := strings.LastIndex(*rl.Replacement, ":"); i >= 0 {
				addrPort = (*rl.Replacement)[i+1:]
			}
		case action == "replace":
			targets[rl.TargetLabel] = rl.SourceLabels
		}
	}
	if !keepsUdsource {
		t.Errorf("PodMonitor %s does not keep only the %s container (a keep relabeling on __meta_kubernetes_pod_container_name)", pm.Metadata.Name, v1alpha1.CtrUdsource)
	}
	vars := connectorVars(t, connector)
	found := false
	for _, p := range pods(r) {
		selected := sel.Matches(labels.Set(p.labels))
		if !p.source {
			if selected {
				t.Errorf("PodMonitor %s selects %s, which runs no connector", pm.Metadata.Name, p.what)
			}
			if p.annotations["prometheus.io/scrape"] == "true" {
				t.Errorf("%s runs no connector but is annotated prometheus.io/scrape", p.what)
			}
			continue
		}
		found = true
		for k, v := range p.labels {
			for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s: label %s=%s: %s", p.what, k, v, msg)
			}
		}
		if !selected {
			t.Errorf("PodMonitor %s does not select %s (pod labels %v)", pm.Metadata.Name, p.what, p.labels)
		}
		port := metricsPort(t, dir, p.container, r, vars)
		if addrPort != port {
			t.Errorf("PodMonitor %s scrapes port %q, but %s serves metrics on METRICS_ADDR port %q", pm.Metadata.Name, addrPort, p.what, port)
		}
		for _, want := range []string{"connector", "pipeline", "vertex"} {
			src, ok := targets[want]
			if !ok {
				t.Errorf("PodMonitor %s sets no %s label", pm.Metadata.Name, want)
				continue
			}
			has := false
			for _, s := range src {
				for k := range p.labels {
					has = has || s == metaLabel(k)
				}
			}
			if !has {
				t.Errorf("PodMonitor %s takes the %s label from %v, none of which is a label of %s (%v)", pm.Metadata.Name, want, src, p.what, p.labels)
			}
		}
		a := p.annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != port || a["prometheus.io/path"] != ep.Path {
			t.Errorf("%s: annotations %v, want prometheus.io/scrape \"true\", prometheus.io/port %q (METRICS_ADDR), prometheus.io/path %q", p.what, a, port, ep.Path)
		}
	}
	if !found {
		t.Errorf("%s has no pod running the connector", dir)
	}
}

// metricsPort is the port of the METRICS_ADDR container c sets (or the connector's default).
func metricsPort(t rep, dir string, c *v1alpha1.Container, r *rendered, vars []envVar) string {
	t.Helper()
	addr := ""
	for _, v := range vars {
		if v.Name == "METRICS_ADDR" {
			addr = v.Default
		}
	}
	if v, ok := setVars(t, dir, c, r)["METRICS_ADDR"]; ok {
		addr = v.value
	}
	if addr == "" {
		t.Errorf("%s: METRICS_ADDR is empty: the connector serves no metrics", dir)
		return ""
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: METRICS_ADDR %q: %v", dir, addr, err)
	}
	return port
}

// TestScrapingChecksCatchMistakes runs the MonoVertex and scraping checks on a base whose source vertex
// is not the first (so the annotations land on the sink), carries no connector label (so the PodMonitor
// misses it) but an invalid label value, serves metrics on another port, and has no monovertex.yaml.
func TestScrapingChecksCatchMistakes(t *testing.T) {
	const connector = "sqs-source"
	dir := t.TempDir()
	files := map[string]string{
		"kustomization.yaml": "resources:\n  - configmap.yaml\n  - pipeline.yaml\n",
		"configmap.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  SQS_QUEUE_URL: http://127.0.0.1:4566/000000000000/q
  METRICS_ADDR: ":9100"
`,
		"pipeline.yaml": `apiVersion: numaflow.numaproj.io/v1alpha1
kind: Pipeline
metadata:
  name: p
spec:
  vertices:
    - name: out
      metadata: {labels: {numaflow-connectors/connector: sqs-source}}
      sink: {log: {}}
    - name: in
      metadata: {labels: {team: a b}}
      scale: {max: 3}
      source:
        udsource:
          container:
            image: ghcr.io/numaflow-connectors/sqs-source:v0.1.0
            envFrom:
              - configMapRef: {name: cfg}
  edges:
    - {from: in, to: out}
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	rec.run(checkScraping, dir, connector)
	rec.run(checkMonoVertex, dir, connector)
	all := strings.Join(rec.msgs, "\n")
	for _, want := range []string{
		"selects pipeline p, vertex out, which runs no connector",
		"pipeline p, vertex out runs no connector but is annotated prometheus.io/scrape",
		"does not select pipeline p, vertex in",
		`scrapes port "9090", but pipeline p, vertex in serves metrics on METRICS_ADDR port "9100"`,
		"none of which is a label of pipeline p, vertex in",
		"pipeline p, vertex in: annotations map[]",
		"has no MonoVertex example",
		"label team=a b: a valid label must",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("not reported: %s", want)
		}
	}
	if t.Failed() {
		t.Logf("reported:\n%s", all)
	}
}
