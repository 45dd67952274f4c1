// Package deploy_test renders every kustomize base under deploy/ and checks it against Numaflow's
// Pipeline types and against the connector it deploys:
//
//   - every object decodes strictly (unknown or mis-cased fields fail) into its Go type: Numaflow's
//     v1alpha1 Pipeline/MonoVertex (github.com/numaproj/numaflow v1.3.1), core and RBAC types;
//   - the connector's vertex is a udsource whose image is ghcr.io/numaflow-connectors/<connector>:vX.Y.Z,
//     where X.Y.Z is the newest version in <connector>/CHANGELOG.md (and no newer <connector>/v* git
//     tag exists): at tag <connector>/vX.Y.Z, `make images` builds exactly that tag (see RELEASING.md);
//   - every env var set (env, envFrom ConfigMap and Secret keys) is one the connector reads, as its own
//     binary reports with --env-json, every required one is set, and the binary's own validation
//     (--validate) accepts the values;
//   - the container runs as 65532, non-root, read-only root file system, no privilege escalation, all
//     capabilities dropped, with CPU and memory requests and limits.
//
// Every base also has a MonoVertex example (monovertex.yaml, applied instead of the Pipeline), checked the
// same way; and built with the scraping components (components/podmonitor, components/prometheus-
// annotations), its PodMonitor must select exactly the connector's pods, scrape the udsource container
// on its METRICS_ADDR port and label series with connector, pipeline and vertex (scrape_test.go).
package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/numaproj/numaflow/pkg/apis/numaflow/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// imageRepo is where release images are pushed (make push REGISTRY=ghcr.io/numaflow-connectors).
const imageRepo = "ghcr.io/numaflow-connectors"

// nonroot is the uid and gid of the image's user (common/imagebuild).
const nonroot = 65532

// sdkVars are variables a connector's broker SDK reads by itself, so its config struct does not declare
// them (style rule 4): a manifest may set them.
var sdkVars = map[string][]string{
	"sqs-source": {
		"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_STS",
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CA_BUNDLE", "AWS_STS_REGIONAL_ENDPOINTS",
		"AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
	},
	"pubsub-source": {
		"GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST",
	},
	"redis-streams-source": {},
	"mqtt-source":          {},
	"rabbitmq-source":      {},
}

// runtimeVars are read by the Go runtime of every binary.
var runtimeVars = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG", "GOTRACEBACK", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR"}

// envVar is one entry of `<connector> --env-json`.
type envVar struct {
	Name        string `json:"name"`
	Default     string `json:"default"`
	Required    bool   `json:"required"`
	Secret      bool   `json:"secret"`
	Description string `json:"description"`
}

// rendered is one kustomize base after `kustomize build`.
type rendered struct {
	pipelines  []*v1alpha1.Pipeline
	monoVertex []*v1alpha1.MonoVertex
	podMonitor []*podMonitor
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	kinds      []string
}

func TestManifests(t *testing.T) {
	dirs, err := filepath.Glob("*/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no deploy/<connector>/kustomization.yaml")
	}
	for _, k := range dirs {
		connector := filepath.Dir(k)
		t.Run(connector, func(t *testing.T) {
			t.Parallel()
			t.Run("pipeline", func(t *testing.T) { checkConnector(t, connector, connector) })
			t.Run("monovertex", func(t *testing.T) { checkMonoVertex(t, connector, connector) })
			t.Run("scraping", func(t *testing.T) { checkScraping(t, connector, connector) })
			t.Run("monovertex-scraping", func(t *testing.T) { checkMonoVertexScraping(t, connector, connector) })
		})
	}
}

// monoVertexFile is every base's MonoVertex example: the connector's container as a MonoVertex with a
// sink, applied with the base's configuration instead of its Pipeline (not in the base's resources).
const monoVertexFile = "monovertex.yaml"

// monoVertexBase copies the base dir to a temporary directory whose kustomization lists monovertex.yaml
// in place of every resource file holding a Pipeline: the base as a user runs it as a MonoVertex. The
// caller removes the copy.
func monoVertexBase(t rep, dir string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, monoVertexFile)); err != nil {
		t.Fatalf("deploy/%s has no MonoVertex example (%s): %v", dir, monoVertexFile, err)
	}
	tmp, err := os.MkdirTemp("", "deploy-monovertex-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	done := false
	defer func() {
		if !done { // a Fatalf on the way
			os.RemoveAll(tmp)
		}
	}()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.IsDir() {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("%v", err)
		}
		if err := os.WriteFile(filepath.Join(tmp, filepath.Base(f)), raw, 0o644); err != nil {
			t.Fatalf("%v", err)
		}
	}
	kpath := filepath.Join(tmp, "kustomization.yaml")
	raw, err := os.ReadFile(kpath)
	if err != nil {
		t.Fatalf("%v", err)
	}
	var k map[string]any
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	res, _ := k["resources"].([]any)
	var out []any
	for _, r := range res {
		name, _ := r.(string)
		body, _ := os.ReadFile(filepath.Join(tmp, name))
		if pipelineKind.Match(body) {
			continue
		}
		out = append(out, r)
	}
	k["resources"] = append(out, monoVertexFile)
	if raw, err = yaml.Marshal(k); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(kpath, raw, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	done = true
	return tmp
}

var pipelineKind = regexp.MustCompile(`(?m)^kind:\s*Pipeline\s*$`)

// checkMonoVertex checks the base dir run as a MonoVertex (monoVertexBase): it renders exactly one
// MonoVertex, with a sink and scale.max, and no Pipeline, and passes every check of checkConnector.
func checkMonoVertex(t rep, dir, connector string) {
	t.Helper()
	mv := monoVertexBase(t, dir)
	defer os.RemoveAll(mv)
	r := checkConnector(t, mv, connector)
	if len(r.monoVertex) != 1 || len(r.pipelines) != 0 {
		t.Errorf("%s as a MonoVertex renders %d MonoVertex and %d Pipeline objects, want 1 and 0 (kinds: %v)", dir, len(r.monoVertex), len(r.pipelines), r.kinds)
	}
	for _, m := range r.monoVertex {
		if m.Spec.Sink == nil {
			t.Errorf("monovertex %s: no sink", m.Name)
		}
		if m.Spec.Scale.Max == nil {
			t.Errorf("monovertex %s: set scale.max (the default allows 50 replicas)", m.Name)
		}
	}
}

// checkMonoVertexScraping is checkScraping on the base run as a MonoVertex.
func checkMonoVertexScraping(t rep, dir, connector string) {
	t.Helper()
	mv := monoVertexBase(t, dir)
	defer os.RemoveAll(mv)
	checkScraping(t, mv, connector)
}

// rep is what the checks report to: *testing.T, or a recorder in TestChecksCatchMistakes.
type rep interface {
	Helper()
	Error(args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// checkConnector checks the kustomize base dir (deploy/<connector>) of connector and returns what it
// rendered.
func checkConnector(t rep, dir, connector string) *rendered {
	t.Helper()
	if _, err := os.Stat(filepath.Join("..", connector, "main.go")); err != nil {
		t.Fatalf("deploy/%s has no connector ../%s/main.go", connector, connector)
	}
	r := render(t, dir)
	if len(r.pipelines) == 0 && len(r.monoVertex) == 0 {
		t.Fatalf("%s renders no Pipeline or MonoVertex (kinds: %v)", dir, r.kinds)
	}

	var containers []*v1alpha1.Container
	for _, p := range r.pipelines {
		found := false
		for _, v := range p.Spec.Vertices {
			if v.Source == nil {
				continue
			}
			if v.Source.UDSource == nil || v.Source.UDSource.Container == nil {
				t.Errorf("pipeline %s: source vertex %s has no udsource container", p.Name, v.Name)
				continue
			}
			found = true
			containers = append(containers, v.Source.UDSource.Container)
			if v.Scale.Max == nil {
				t.Errorf("pipeline %s, vertex %s: set scale.max (the default allows 50 replicas)", p.Name, v.Name)
			}
		}
		if !found {
			t.Errorf("pipeline %s: no source vertex with a udsource container", p.Name)
		}
	}
	for _, m := range r.monoVertex {
		if m.Spec.Source == nil || m.Spec.Source.UDSource == nil || m.Spec.Source.UDSource.Container == nil {
			t.Errorf("monovertex %s: no udsource container", m.Name)
			continue
		}
		containers = append(containers, m.Spec.Source.UDSource.Container)
	}

	vars := connectorVars(t, connector)
	wantImage := imageRepo + "/" + connector + ":" + releaseTag(t, connector)
	for _, c := range containers {
		if c.Image != wantImage {
			t.Errorf("udsource image %q, want %q", c.Image, wantImage)
		}
		checkEnv(t, dir, connector, c, r, vars)
		checkSecurity(t, c)
		checkResources(t, c)
	}
	return r
}

// render runs kustomize on deploy/<connector> and strictly decodes every object.
func render(t rep, dir string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	r := &rendered{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for _, res := range m.Resources() {
		raw, err := res.MarshalJSON()
		if err != nil {
			t.Fatalf("encoding %s: %v", res.CurId(), err)
		}
		kind := res.GetKind()
		r.kinds = append(r.kinds, kind)
		decodeObject(t, res.CurId().String(), kind, res.GetApiVersion(), raw, r)
	}
	return r
}

// decodeObject strictly decodes one object (JSON) into its Go type and files it in r.
func decodeObject(t rep, id, kind, apiVersion string, raw []byte, r *rendered) {
	t.Helper()
	var target any
	switch apiVersion + "/" + kind {
	case "numaflow.numaproj.io/v1alpha1/Pipeline":
		p := &v1alpha1.Pipeline{}
		r.pipelines = append(r.pipelines, p)
		target = p
	case "numaflow.numaproj.io/v1alpha1/MonoVertex":
		mv := &v1alpha1.MonoVertex{}
		r.monoVertex = append(r.monoVertex, mv)
		target = mv
	case "monitoring.coreos.com/v1/PodMonitor":
		pm := &podMonitor{}
		r.podMonitor = append(r.podMonitor, pm)
		if err := json.Unmarshal(raw, pm); err != nil { // strictly checked in deploy/observability
			t.Errorf("%s: %v", id, err)
		}
		return
	case "v1/ConfigMap":
		cm := &corev1.ConfigMap{}
		defer func() { r.configMaps[cm.Name] = cm }()
		target = cm
	case "v1/Secret":
		s := &corev1.Secret{}
		defer func() { r.secrets[s.Name] = s }()
		target = s
	case "v1/ServiceAccount":
		target = &corev1.ServiceAccount{}
	case "rbac.authorization.k8s.io/v1/Role":
		target = &rbacv1.Role{}
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		target = &rbacv1.RoleBinding{}
	default:
		t.Errorf("%s: no Go type to check %s %s against; add one to deploy_test.go", id, apiVersion, kind)
		return
	}
	if err := strictDecode(raw, target); err != nil {
		t.Errorf("%s does not match the %T schema (Numaflow v1.3.1 types for Numaflow kinds): %v", id, target, err)
	}
}

// strictDecode fails on unknown fields, duplicate fields and fields whose case differs from the
// schema (which the API server would silently drop).
func strictDecode(raw []byte, v any) error {
	strictErrs, err := k8sjson.UnmarshalStrict(raw, v, k8sjson.DisallowDuplicateFields, k8sjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	return nil
}

var (
	binOnce sync.Map // connector -> *binResult
	binDir  string   // where the connector binaries are built; removed by TestMain
)

type binResult struct {
	once sync.Once
	bin  string // the connector binary
	vars []envVar
	err  error
}

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "deploy-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// connectorVars builds the connector binary from its own module and asks it for the variables it reads.
func connectorVars(t rep, connector string) []envVar {
	t.Helper()
	v, _ := binOnce.LoadOrStore(connector, &binResult{})
	br := v.(*binResult)
	br.once.Do(func() {
		bin := filepath.Join(binDir, connector)
		br.bin = bin
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Dir = filepath.Join("..", connector)
		build.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			br.err = fmt.Errorf("go build %s: %v\n%s", connector, err, out)
			return
		}
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "--env-json")
		cmd.Stderr = &stderr
		cmd.Env = []string{} // the variables it lists must not depend on the test's environment
		out, err := cmd.Output()
		if err != nil {
			br.err = fmt.Errorf("%s --env-json: %v (stderr: %s)", connector, err, strings.TrimSpace(stderr.String()))
			return
		}
		if err := json.Unmarshal(out, &br.vars); err != nil {
			br.err = fmt.Errorf("%s --env-json printed no JSON array of variables: %v: %.200q", connector, err, out)
			return
		}
		if len(br.vars) == 0 {
			br.err = fmt.Errorf("%s --env-json listed no variables", connector)
		}
	})
	if br.err != nil {
		t.Fatalf("%v", br.err)
	}
	return br.vars
}

// connectorBin returns the binary connectorVars built.
func connectorBin(t rep, connector string) string {
	t.Helper()
	connectorVars(t, connector)
	v, _ := binOnce.Load(connector)
	return v.(*binResult).bin
}

// setVar is a variable a container sets: where from, and its value as the pod would see it (a field
// reference gets a stand-in).
type setVar struct {
	from, value string
}

// setVars lists the variables container c sets, with where each comes from and its value.
func setVars(t rep, dir string, c *v1alpha1.Container, r *rendered) map[string]setVar {
	t.Helper()
	set := map[string]setVar{}
	add := func(name, from, value string) {
		if prev, ok := set[name]; ok {
			t.Errorf("%s is set twice: by %s and by %s", name, prev.from, from)
		}
		set[name] = setVar{from, value}
	}
	secret := func(name string) *corev1.Secret {
		if s, ok := r.secrets[name]; ok {
			return s
		}
		return exampleSecret(t, dir, name)
	}
	for _, e := range c.Env {
		value := e.Value
		if vf := e.ValueFrom; vf != nil {
			switch {
			case vf.SecretKeyRef != nil:
				if s := secret(vf.SecretKeyRef.Name); s != nil {
					value = secretValue(s, vf.SecretKeyRef.Key)
				}
			case vf.ConfigMapKeyRef != nil:
				if cm, ok := r.configMaps[vf.ConfigMapKeyRef.Name]; ok {
					value = cm.Data[vf.ConfigMapKeyRef.Key]
				}
			default:
				value = "stand-in" // a pod field or resource
			}
		}
		add(e.Name, "env", value)
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := r.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("envFrom ConfigMap %q is not part of %s", ef.ConfigMapRef.Name, dir)
				continue
			}
			for k, v := range cm.Data {
				add(ef.Prefix+k, "ConfigMap "+cm.Name, v)
			}
			for k, v := range cm.BinaryData {
				add(ef.Prefix+k, "ConfigMap "+cm.Name, string(v))
			}
		case ef.SecretRef != nil:
			s := secret(ef.SecretRef.Name)
			if s == nil {
				t.Errorf("envFrom Secret %q is neither part of %s nor given as an example (a YAML file there holding a Secret of that name)", ef.SecretRef.Name, dir)
				continue
			}
			for k, v := range s.Data {
				add(ef.Prefix+k, "Secret "+s.Name, string(v))
			}
			for k, v := range s.StringData {
				add(ef.Prefix+k, "Secret "+s.Name, v)
			}
		}
	}
	return set
}

func secretValue(s *corev1.Secret, key string) string {
	if v, ok := s.StringData[key]; ok {
		return v
	}
	return string(s.Data[key])
}

// checkValues runs the connector's own validation (--validate: the configuration loaded exactly as a
// start would, no network call) on the values the manifests set: a base with a value the binary would
// refuse fails. A variable naming a file (VAR_FILE, a mounted secret) gets a stand-in file.
func checkValues(t rep, dir, connector string, set map[string]setVar) {
	t.Helper()
	files, err := os.MkdirTemp("", "deploy-values-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer os.RemoveAll(files)
	environ := []string{}
	for name, v := range set {
		value := v.value
		if strings.HasSuffix(name, "_FILE") && value != "" {
			value = filepath.Join(files, name)
			if err := os.WriteFile(value, []byte("stand-in"), 0o600); err != nil {
				t.Fatalf("%v", err)
			}
		}
		environ = append(environ, name+"="+value)
	}
	cmd := exec.Command(connectorBin(t, connector), "--validate")
	cmd.Env = environ
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: %s refuses the values the manifests set (%v):\n%s", dir, connector, err, strings.TrimSpace(string(out)))
	}
}

// exampleSecret finds a Secret named name in a YAML file of deploy/<connector> that the kustomization
// does not include (the example a user copies and creates), strictly decoded.
func exampleSecret(t rep, dir, name string) *corev1.Secret {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("%v", err)
		}
		for _, doc := range splitYAML(raw) {
			var head struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil || head.Kind != "Secret" || head.Metadata.Name != name {
				continue
			}
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			s := &corev1.Secret{}
			if err := strictDecode(js, s); err != nil {
				t.Errorf("%s: Secret %s: %v", f, name, err)
			}
			return s
		}
	}
	return nil
}

func splitYAML(raw []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimRight(sc.Text(), " ") == "---" {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(sc.Bytes())
		cur.WriteByte('\n')
	}
	return append(docs, cur.Bytes())
}

func checkEnv(t rep, dir, connector string, c *v1alpha1.Container, r *rendered, vars []envVar) {
	t.Helper()
	known := map[string]envVar{}
	for _, v := range vars {
		known[v.Name] = v
	}
	allowed := func(name string) bool {
		if _, ok := known[name]; ok {
			return true
		}
		if base, ok := strings.CutSuffix(name, "_FILE"); ok && known[base].Secret {
			return true
		}
		return slices.Contains(sdkVars[connector], name) || slices.Contains(runtimeVars, name)
	}
	set := setVars(t, dir, c, r)
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		switch {
		case strings.HasPrefix(n, "NUMAFLOW_"):
			t.Errorf("%s (from %s) is set by Numaflow itself; a manifest must not set it", n, set[n].from)
		case !allowed(n):
			t.Errorf("%s (from %s) is not a variable %s reads (see %s --help)", n, set[n].from, connector, connector)
		}
	}
	for _, v := range vars {
		if !v.Required {
			continue
		}
		_, direct := set[v.Name]
		_, file := set[v.Name+"_FILE"]
		if !direct && !(v.Secret && file) {
			t.Errorf("required variable %s is not set (%s)", v.Name, v.Description)
		}
	}
	checkValues(t, dir, connector, set)
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef == nil && e.ValueFrom.ConfigMapKeyRef == nil && e.ValueFrom.FieldRef == nil && e.ValueFrom.ResourceFieldRef == nil {
			t.Errorf("env %s: empty valueFrom", e.Name)
		}
		if v, ok := known[e.Name]; ok && v.Secret && e.Value != "" {
			t.Errorf("env %s is a secret: take it from a Secret (valueFrom.secretKeyRef or %s_FILE), not a literal value", e.Name, e.Name)
		}
	}
	for name, cm := range r.configMaps {
		for k := range cm.Data {
			if v, ok := known[k]; ok && v.Secret {
				t.Errorf("ConfigMap %s holds secret variable %s: put it in a Secret", name, k)
			}
		}
	}
}

func checkSecurity(t rep, c *v1alpha1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Error("udsource container has no securityContext")
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("securityContext.runAsNonRoot must be true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != nonroot {
		t.Errorf("securityContext.runAsUser must be %d (the image's nonroot user)", nonroot)
	}
	if sc.RunAsGroup != nil && *sc.RunAsGroup != nonroot {
		t.Errorf("securityContext.runAsGroup must be %d when set", nonroot)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("securityContext.readOnlyRootFilesystem must be true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("securityContext.allowPrivilegeEscalation must be false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("securityContext.privileged must not be true")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("securityContext.capabilities.drop must contain ALL")
	} else if len(sc.Capabilities.Add) > 0 {
		t.Errorf("securityContext.capabilities.add must be empty, got %v", sc.Capabilities.Add)
	}
}

func checkResources(t rep, c *v1alpha1.Container) {
	t.Helper()
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[res]
		lim, okLim := c.Resources.Limits[res]
		if !okReq || req.IsZero() {
			t.Errorf("resources.requests.%s must be set", res)
		}
		if !okLim || lim.IsZero() {
			t.Errorf("resources.limits.%s must be set", res)
		}
		if okReq && okLim && lim.Cmp(req) < 0 {
			t.Errorf("resources.limits.%s %s is below the request %s", res, lim.String(), req.String())
		}
	}
}

var changelogVersion = regexp.MustCompile(`^##\s+\[?v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)(?:\]|\s|$)`)

// releaseTag is the tag deploy/<connector> must use: v + the newest version heading of the connector's
// CHANGELOG.md ("## [X.Y.Z] - 2025-01-31", "## [X.Y.Z] - Unreleased" or "## vX.Y.Z (unreleased)";
// a bare "## [Unreleased]" is skipped). It
// also fails when git has a newer <connector>/vX.Y.Z tag: the manifests would lag the release.
func releaseTag(t rep, connector string) string {
	t.Helper()
	path := filepath.Join("..", connector, "CHANGELOG.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s (its newest version is the image tag the manifests must use): %v", path, err)
	}
	var version string
	for _, l := range strings.Split(string(raw), "\n") {
		if m := changelogVersion.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			version = m[1]
			break
		}
	}
	if version == "" {
		t.Fatalf("%s has no version heading (## [X.Y.Z] - ... or ## vX.Y.Z ...)", path)
	}
	out, err := exec.Command("git", "tag", "--list", connector+"/v*").Output()
	if err != nil {
		t.Logf("git tag --list: %v (skipping the check for newer release tags)", err)
		return "v" + version
	}
	for _, tag := range strings.Fields(string(out)) {
		tv := strings.TrimPrefix(tag, connector+"/v")
		if semverLess(version, tv) {
			t.Errorf("git tag %s is newer than %s's newest CHANGELOG version %s", tag, connector, version)
		}
	}
	return "v" + version
}

// semverLess compares MAJOR.MINOR.PATCH (a pre-release sorts before its release).
func semverLess(a, b string) bool {
	pa, prea, _ := strings.Cut(a, "-")
	pb, preb, _ := strings.Cut(b, "-")
	na, nb := nums(pa), nums(pb)
	for i := range 3 {
		if na[i] != nb[i] {
			return na[i] < nb[i]
		}
	}
	switch {
	case prea == preb:
		return false
	case prea == "":
		return false
	case preb == "":
		return true
	}
	return prea < preb
}

func nums(v string) [3]int {
	var out [3]int
	for i, p := range strings.SplitN(v, ".", 3) {
		out[i], _ = strconv.Atoi(p)
	}
	return out
}

func TestSemverLess(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"0.1.0", "0.2.0", true}, {"0.2.0", "0.1.0", false}, {"0.1.0", "0.1.0", false},
		{"0.10.0", "0.9.0", false}, {"1.0.0-rc.1", "1.0.0", true}, {"1.0.0", "1.0.0-rc.1", false},
	}
	for _, c := range cases {
		if got := semverLess(c.a, c.b); got != c.want {
			t.Errorf("semverLess(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// TestStrictDecodeRejects shows that the schema check can fail: a field v1.3.1 does not know, and a
// known field with the wrong case.
func TestStrictDecodeRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": `{"apiVersion":"numaflow.numaproj.io/v1alpha1","kind":"Pipeline","metadata":{"name":"p"},
			"spec":{"vertices":[{"name":"in","source":{"udsource":{"container":{"image":"x","imagePulPolicy":"Always"}}}}]}}`,
		"wrong case": `{"apiVersion":"numaflow.numaproj.io/v1alpha1","kind":"Pipeline","metadata":{"name":"p"},
			"spec":{"vertices":[{"name":"in","limits":{"ReadBatchSize":10}}]}}`,
	} {
		if err := strictDecode([]byte(doc), &v1alpha1.Pipeline{}); err == nil {
			t.Errorf("%s: strict decoding accepted it", name)
		}
	}
}

// recorder collects what the checks report; Fatalf stops the check like t.Fatalf does.
type recorder struct {
	msgs []string
}

type fatal struct{}

func (r *recorder) Helper()             {}
func (r *recorder) Logf(string, ...any) {}
func (r *recorder) Error(args ...any)   { r.msgs = append(r.msgs, fmt.Sprint(args...)) }
func (r *recorder) Errorf(format string, args ...any) {
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(fatal{})
}

// run runs check on dir for connector, reporting to r; a Fatalf stops it as it stops a test.
func (r *recorder) run(check func(rep, string, string), dir, connector string) {
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(fatal); !ok {
				panic(p)
			}
		}
	}()
	check(r, dir, connector)
}

// TestChecksCatchMistakes runs the checks on a base with one mistake of each kind and expects each to
// be reported.
func TestChecksCatchMistakes(t *testing.T) {
	const connector = "sqs-source"
	dir := t.TempDir()
	files := map[string]string{
		"kustomization.yaml": "resources:\n  - configmap.yaml\n  - pipeline.yaml\n",
		"configmap.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  FOO_BAR: "1"
  SQS_WAIT_TIME: 25s
`,
		"pipeline.yaml": `apiVersion: numaflow.numaproj.io/v1alpha1
kind: Pipeline
metadata:
  name: p
spec:
  vertices:
    - name: in
      scaling: {max: 3}
      source:
        udsource:
          container:
            image: ghcr.io/numaflow-connectors/sqs-source:latest
            env:
              - name: NUMAFLOW_REPLICA
                value: "0"
            envFrom:
              - configMapRef: {name: cfg}
              - secretRef: {name: missing}
            resources:
              requests: {cpu: 100m, memory: 64Mi}
              limits: {cpu: 50m}
            securityContext:
              runAsUser: 0
    - name: out
      sink: {log: {}}
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
	rec.run(func(t rep, dir, connector string) { checkConnector(t, dir, connector) }, dir, connector)
	all := strings.Join(rec.msgs, "\n")
	for _, want := range []string{
		`unknown field "spec.vertices[0].scaling"`,
		"set scale.max",
		`udsource image "ghcr.io/numaflow-connectors/sqs-source:latest"`,
		"FOO_BAR (from ConfigMap cfg) is not a variable sqs-source reads",
		"NUMAFLOW_REPLICA (from env) is set by Numaflow",
		"required variable SQS_QUEUE_URL is not set",
		"sqs-source refuses the values the manifests set",
		"SQS_WAIT_TIME: must be between 0s and 20s, got 25s",
		`envFrom Secret "missing" is neither part of`,
		"runAsNonRoot must be true",
		"runAsUser must be 65532",
		"readOnlyRootFilesystem must be true",
		"allowPrivilegeEscalation must be false",
		"capabilities.drop must contain ALL",
		"resources.limits.memory must be set",
		"resources.limits.cpu 50m is below the request 100m",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("not reported: %s", want)
		}
	}
	if t.Failed() {
		t.Logf("reported:\n%s", all)
	}
}
