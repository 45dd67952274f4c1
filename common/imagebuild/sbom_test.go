package imagebuild

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// spdxDoc is how a consumer reads the SBOM: the SPDX 2.3 JSON field names, written down here
// independently of the encoder's struct tags, so a misspelt tag fails the tests.
type spdxDoc struct {
	SPDXVersion       string `json:"spdxVersion"`
	DataLicense       string `json:"dataLicense"`
	SPDXID            string `json:"SPDXID"`
	Name              string `json:"name"`
	DocumentNamespace string `json:"documentNamespace"`
	CreationInfo      struct {
		Created  string   `json:"created"`
		Creators []string `json:"creators"`
	} `json:"creationInfo"`
	Packages []struct {
		Name             string `json:"name"`
		SPDXID           string `json:"SPDXID"`
		VersionInfo      string `json:"versionInfo"`
		PackageFileName  string `json:"packageFileName"`
		DownloadLocation string `json:"downloadLocation"`
		Checksums        []struct {
			Algorithm     string `json:"algorithm"`
			ChecksumValue string `json:"checksumValue"`
		} `json:"checksums"`
		Comment      string `json:"comment"`
		ExternalRefs []struct {
			ReferenceCategory string `json:"referenceCategory"`
			ReferenceType     string `json:"referenceType"`
			ReferenceLocator  string `json:"referenceLocator"`
		} `json:"externalRefs"`
	} `json:"packages"`
	Relationships []struct {
		Element string `json:"spdxElementId"`
		Type    string `json:"relationshipType"`
		Related string `json:"relatedSpdxElement"`
	} `json:"relationships"`
}

// sbomPackage is one package of an SBOM as the tests compare it.
type sbomPackage struct {
	version, sha256, purl, comment string
}

// packages returns the document's packages by name, and the name of the package it DESCRIBES.
func (d *spdxDoc) packages(t *testing.T) (map[string]sbomPackage, string) {
	t.Helper()
	byID := map[string]string{}
	out := map[string]sbomPackage{}
	for _, p := range d.Packages {
		if _, dup := out[p.Name]; dup {
			t.Errorf("package %s listed twice", p.Name)
		}
		if _, dup := byID[p.SPDXID]; dup || !strings.HasPrefix(p.SPDXID, "SPDXRef-") || strings.ContainsFunc(p.SPDXID, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-')
		}) {
			t.Errorf("package %s: SPDXID %q is not a unique SPDX identifier", p.Name, p.SPDXID)
		}
		if p.DownloadLocation == "" {
			t.Errorf("package %s has no downloadLocation (required by SPDX 2.3)", p.Name)
		}
		byID[p.SPDXID] = p.Name
		sp := sbomPackage{version: p.VersionInfo, comment: p.Comment}
		for _, c := range p.Checksums {
			if c.Algorithm == "SHA256" {
				sp.sha256 = c.ChecksumValue
			}
		}
		for _, r := range p.ExternalRefs {
			if r.ReferenceType == "purl" && r.ReferenceCategory == "PACKAGE-MANAGER" {
				sp.purl = r.ReferenceLocator
			}
		}
		out[p.Name] = sp
	}
	var described string
	for _, r := range d.Relationships {
		if _, ok := byID[r.Related]; !ok {
			t.Errorf("relationship %s %s %s: no such package", r.Element, r.Type, r.Related)
		}
		if r.Element == "SPDXRef-DOCUMENT" && r.Type == "DESCRIBES" {
			described = byID[r.Related]
		}
	}
	return out, described
}

// checkSBOM opens the SBOM attached to the image for plat in idx and checks it against the Go build
// info of bin, the binary found in that image: the document's identity and time, the main module with
// the image's version and the binary's SHA-256, the Go version, and every module the binary links with
// its exact version and go.sum hash. It returns the document.
func checkSBOM(t *testing.T, idx v1.ImageIndex, plat v1.Platform, bin []byte, want expectation) (*spdxDoc, int) {
	t.Helper()
	raw, err := SBOM(idx, plat)
	if err != nil {
		t.Fatalf("SBOM(%s): %v", plat.String(), err)
	}
	var doc spdxDoc
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decoding the SBOM of %s: %v", plat.String(), err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || doc.DataLicense != "CC0-1.0" || doc.SPDXID != "SPDXRef-DOCUMENT" {
		t.Errorf("SBOM header = %q %q %q, want SPDX-2.3 CC0-1.0 SPDXRef-DOCUMENT", doc.SPDXVersion, doc.DataLicense, doc.SPDXID)
	}
	if got, w := doc.CreationInfo.Created, want.created.UTC().Format(time.RFC3339); got != w {
		t.Errorf("SBOM created = %q, want the image's created time %s", got, w)
	}
	if len(doc.CreationInfo.Creators) == 0 || !strings.HasPrefix(doc.CreationInfo.Creators[0], "Tool: ") {
		t.Errorf("SBOM creators = %q, want a Tool", doc.CreationInfo.Creators)
	}
	sum := sha256.Sum256(bin)
	binHex := hex.EncodeToString(sum[:])
	if !strings.HasPrefix(doc.DocumentNamespace, "https://") || !strings.Contains(doc.DocumentNamespace, binHex) {
		t.Errorf("SBOM namespace %q: want a URI derived from the binary's hash %s", doc.DocumentNamespace, binHex)
	}

	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("build info of the %s binary: %v", plat.String(), err)
	}
	pkgs, described := doc.packages(t)
	main, ok := pkgs[bi.Main.Path]
	if described != bi.Main.Path || !ok {
		t.Fatalf("SBOM describes %q, want the main module %s", described, bi.Main.Path)
	}
	if main.version != want.version || main.sha256 != binHex || main.purl != "pkg:golang/"+bi.Main.Path+"@"+want.version {
		t.Errorf("main package = %+v, want version %s, the binary's SHA-256 %s and its purl", main, want.version, binHex)
	}
	for _, s := range []string{"GOOS=" + plat.OS, "GOARCH=" + plat.Architecture, "CGO_ENABLED=0", "-trimpath=true", bi.GoVersion} {
		if !strings.Contains(main.comment, s) {
			t.Errorf("main package comment %q lacks the build setting %s", main.comment, s)
		}
	}
	if std := pkgs["stdlib"]; std.version != bi.GoVersion || std.purl != "pkg:golang/stdlib@"+strings.TrimPrefix(bi.GoVersion, "go") {
		t.Errorf("stdlib package = %+v, want Go %s", std, bi.GoVersion)
	}
	if len(pkgs) != 2+len(bi.Deps) {
		t.Errorf("SBOM lists %d packages, want main + stdlib + %d modules", len(pkgs), len(bi.Deps))
	}
	for _, d := range bi.Deps {
		version, h1, local := d.Version, d.Sum, false
		if d.Replace != nil {
			version, h1 = d.Replace.Version, d.Replace.Sum
			local = version == "(devel)" // a directory
		}
		p, ok := pkgs[d.Path]
		if !ok {
			t.Errorf("module %s %s missing from the SBOM", d.Path, version)
			continue
		}
		if p.version != version {
			t.Errorf("module %s: SBOM version %q, binary has %q", d.Path, p.version, version)
		}
		if h1 != "" && p.sha256 != goSumHex(t, h1) {
			t.Errorf("module %s: SBOM SHA-256 %q, want the binary's go.sum hash %s", d.Path, p.sha256, h1)
		}
		if wantPURL := !local; wantPURL != strings.HasPrefix(p.purl, "pkg:golang/"+d.Path+"@") {
			t.Errorf("module %s: purl %q (a module replaced by a directory has none)", d.Path, p.purl)
		}
	}
	return &doc, len(raw)
}

// goSumHex decodes a go.sum h1: hash to hex, independently of the builder's decoder.
func goSumHex(t *testing.T, h1 string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h1, "h1:"))
	if err != nil {
		t.Fatalf("go.sum hash %q: %v", h1, err)
	}
	return hex.EncodeToString(raw)
}

// checkAttestations checks the index's attestation entries: exactly one per image, after the images,
// platform unknown/unknown, naming its image's digest, one in-toto layer with the SPDX predicate type.
func checkAttestations(t *testing.T, m *v1.IndexManifest, idx v1.ImageIndex) {
	t.Helper()
	var images []v1.Hash
	attested := map[v1.Hash]int{}
	for i, d := range m.Manifests {
		about, att := AttestedImage(d)
		if !att {
			if len(attested) > 0 {
				t.Errorf("manifest %d (%s) is an image after an attestation; images come first", i, d.Digest)
			}
			images = append(images, d.Digest)
			continue
		}
		attested[about]++
		if d.Platform == nil || d.Platform.OS != "unknown" || d.Platform.Architecture != "unknown" {
			t.Errorf("attestation %s platform = %v, want unknown/unknown", d.Digest, d.Platform)
		}
		if d.MediaType != types.OCIManifestSchema1 {
			t.Errorf("attestation %s media type = %q", d.Digest, d.MediaType)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		am, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(am.Layers) != 1 || am.Layers[0].MediaType != "application/vnd.in-toto+json" ||
			am.Layers[0].Annotations["in-toto.io/predicate-type"] != "https://spdx.dev/Document" {
			t.Errorf("attestation %s layers = %+v, want one in-toto SPDX statement", d.Digest, am.Layers)
		}
		if cf, err := img.ConfigFile(); err != nil || cf.OS != "unknown" || cf.Architecture != "unknown" {
			t.Errorf("attestation %s config = %+v, %v", d.Digest, cf, err)
		}
	}
	for _, h := range images {
		if attested[h] != 1 {
			t.Errorf("image %s has %d attestations, want 1", h, attested[h])
		}
	}
	if len(attested) != len(images) {
		t.Errorf("%d attestations for %d images", len(attested), len(images))
	}
}

func TestSBOMOfReplacedAndOddModules(t *testing.T) {
	t.Parallel()
	sumA := "h1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	sumB := "h1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x01}, 32))
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "example.test/app", Version: "(devel)"},
		Deps: []*debug.Module{
			{Path: "example.test/plain", Version: "v1.2.3", Sum: sumA},
			{Path: "example.test/old", Version: "v2.0.0+incompatible", Sum: sumA},
			{Path: "example.test/forked", Version: "v1.0.0", Replace: &debug.Module{Path: "example.test/fork", Version: "v1.0.1", Sum: sumB}},
			{Path: "example.test/local", Version: "v0.0.0", Replace: &debug.Module{Path: "../local", Version: "(devel)"}},
			{Path: "example.test/a_b", Version: "v1.0.0"},
			{Path: "example.test/a-b", Version: "v1.0.0"},
		},
		Settings: []debug.BuildSetting{{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "amd64"}, {Key: "vcs.revision", Value: "abc"}},
	}
	cfg := Config{Name: "app", Version: "v0.1.0", Revision: "abc", Source: "https://example.test/app", Licenses: "Apache-2.0", Created: testCreated}
	raw, err := sbom(&cfg, v1.Platform{OS: "linux", Architecture: "amd64"}, []byte("binary"), bi)
	if err != nil {
		t.Fatal(err)
	}
	var doc spdxDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	pkgs, described := doc.packages(t)
	if described != "example.test/app" {
		t.Errorf("describes %q", described)
	}
	want := map[string]sbomPackage{
		"example.test/plain":  {version: "v1.2.3", sha256: strings.Repeat("ab", 32), purl: "pkg:golang/example.test/plain@v1.2.3"},
		"example.test/old":    {version: "v2.0.0+incompatible", sha256: strings.Repeat("ab", 32), purl: "pkg:golang/example.test/old@v2.0.0%2Bincompatible"},
		"example.test/forked": {version: "v1.0.1", sha256: strings.Repeat("01", 32), purl: "pkg:golang/example.test/forked@v1.0.1"},
		"example.test/local":  {version: "(devel)"},
		"example.test/a_b":    {version: "v1.0.0", purl: "pkg:golang/example.test/a_b@v1.0.0"},
		"example.test/a-b":    {version: "v1.0.0", purl: "pkg:golang/example.test/a-b@v1.0.0"},
	}
	for name, w := range want {
		got := pkgs[name]
		got.comment = ""
		if got != w {
			t.Errorf("%s = %+v, want %+v", name, got, w)
		}
	}
	for name, sub := range map[string]string{
		"example.test/forked": "replaced by example.test/fork v1.0.1",
		"example.test/local":  "replaced by the local directory ../local",
		"example.test/plain":  "go.sum " + sumA,
	} {
		if !strings.Contains(pkgs[name].comment, sub) {
			t.Errorf("%s comment %q lacks %q", name, pkgs[name].comment, sub)
		}
	}
	if c := pkgs["example.test/app"].comment; !strings.Contains(c, "GOOS=linux GOARCH=amd64 vcs.revision=abc") || !strings.Contains(c, "go1.26.8") {
		t.Errorf("main comment %q lacks the build settings or Go version", c)
	}
	again, err := sbom(&cfg, v1.Platform{OS: "linux", Architecture: "amd64"}, []byte("binary"), bi)
	if err != nil || !bytes.Equal(raw, again) {
		t.Errorf("the same inputs gave another document (%v)", err)
	}
	other, err := sbom(&cfg, v1.Platform{OS: "linux", Architecture: "amd64"}, []byte("binary2"), bi)
	if err != nil {
		t.Fatal(err)
	}
	var doc2 spdxDoc
	if err := json.Unmarshal(other, &doc2); err != nil {
		t.Fatal(err)
	}
	if doc2.DocumentNamespace == doc.DocumentNamespace {
		t.Errorf("another binary kept the namespace %s", doc.DocumentNamespace)
	}
}

// connectorFlag picks the connector TestSBOMOfConnector builds (one per run keeps it fast; every
// connector's image is checked the same way by TestDist after make images).
var connectorFlag = flag.String("connector", "redis-streams-source", "connector directory (beside common) that TestSBOMOfConnector builds")

// brokerSDK returns the client library connector must list in its SBOM (testdata/broker-sdks.txt; a
// data file, as common's Go code names no broker SDK), "" when the file has none for it.
func brokerSDK(t *testing.T, connector string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "broker-sdks.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == connector {
			return f[1]
		}
	}
	return ""
}

const numaflowGo = "github.com/numaproj/numaflow-go"

// TestSBOMOfConnector builds a real connector's image as make images does (static linux/amd64 and
// linux/arm64 binaries, -trimpath, the module's own go.mod) and checks, for each platform, that its
// SBOM lists numaflow-go and the broker SDK with exactly the versions and go.sum hashes of the
// connector's go.mod and go.sum, every module with go.mod's version, and the Go version; and that a
// second build of the same binaries gives the same index digest.
func TestSBOMOfConnector(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a connector for two platforms")
	}
	t.Parallel()
	connector := *connectorFlag
	src := filepath.Join("..", "..", connector)
	if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
		t.Skipf("no connector %s beside common: %v", connector, err)
	}

	start := time.Now()
	cfg := testConfig(t)
	cfg.Name, cfg.Version = connector, "v0.0.0-test"
	dir := t.TempDir()
	for i, arch := range []string{"amd64", "arm64"} {
		out := filepath.Join(dir, arch, connector)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
		cmd.Dir = src
		// The environment's GOFLAGS stay, as for make images.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOWORK=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s for %s: %v\n%s", connector, arch, err, b)
		}
		cfg.Binaries[i].Path = out
	}
	built := time.Since(start)
	start = time.Now()
	_, idx := buildLayout(t, cfg)
	packed := time.Since(start)
	images := checkIndex(t, idx, expectation{
		name: cfg.Name, version: cfg.Version, revision: cfg.Revision, source: cfg.Source,
		licenses: cfg.Licenses, description: cfg.Description, created: cfg.Created,
	})
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run("go.mod/"+arch, func(t *testing.T) {
			im := images[arch]
			if im.sbom == nil {
				t.Fatal("no SBOM checked for this platform")
			}
			t.Logf("%s %s: SBOM %d bytes, %d packages", connector, arch, im.sbomSize, len(im.sbom.Packages))
			checkSBOMAgainstModule(t, im.sbom, src, connector)
		})
	}

	again, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := idx.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds of the same %s binaries gave index digests %s and %s", connector, d1, d2)
	}
	t.Logf("%s: binaries built in %s, image with SBOMs packed in %s, index %s", connector,
		built.Round(time.Millisecond), packed.Round(time.Millisecond), d1)
}

// checkSBOMAgainstModule checks doc, the SBOM of connector built from the module in dir, against that
// module's go.mod and go.sum: numaflow-go and the broker SDK are listed with exactly the required
// version and go.sum hash; every module listed is one go.mod requires, at its version (or its
// replacement's); the Go version is the toolchain's.
func checkSBOMAgainstModule(t *testing.T, doc *spdxDoc, dir, connector string) {
	t.Helper()
	mod := readGoMod(t, filepath.Join(dir, "go.mod"))
	required, replaced := mod.require, mod.replace
	gosum := readGoSum(t, filepath.Join(dir, "go.sum"))
	pkgs, described := doc.packages(t)
	if described != mod.module {
		t.Errorf("SBOM describes %q, want the module %s", described, mod.module)
	}
	goEnv := exec.Command("go", "env", "GOVERSION") // in the module: its toolchain line counts
	goEnv.Dir = dir
	goEnv.Env = append(os.Environ(), "GOWORK=off")
	goVersion, err := goEnv.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pkgs["stdlib"].version, strings.TrimSpace(string(goVersion)); got != want {
		t.Errorf("SBOM Go version %q, want the toolchain's %q", got, want)
	}

	must := []string{numaflowGo}
	if sdk := brokerSDK(t, connector); sdk != "" {
		must = append(must, sdk)
	}
	for _, m := range must {
		p, ok := pkgs[m]
		if !ok {
			t.Errorf("SBOM lacks %s", m)
			continue
		}
		if p.version != required[m] || p.version == "" {
			t.Errorf("SBOM lists %s %q, go.mod requires %q", m, p.version, required[m])
		}
		if p.purl != "pkg:golang/"+m+"@"+required[m] {
			t.Errorf("%s purl %q, want pkg:golang/%s@%s", m, p.purl, m, required[m])
		}
		if h1 := gosum[m+" "+required[m]]; h1 == "" || p.sha256 != goSumHex(t, h1) {
			t.Errorf("%s SHA-256 %q, want go.sum's %s", m, p.sha256, h1)
		}
	}
	for name, p := range pkgs {
		if name == "stdlib" || name == mod.module {
			continue
		}
		v, ok := required[name]
		if !ok {
			t.Errorf("SBOM lists %s %s, which go.mod does not require", name, p.version)
			continue
		}
		if r, ok := replaced[name]; ok {
			v = r
			if v == "" { // a directory: the toolchain records "(devel)"
				v = "(devel)"
			}
		}
		if p.version != v {
			t.Errorf("SBOM lists %s %q, go.mod says %q", name, p.version, v)
		}
	}
}

// goMod is what the tests need of a go.mod file.
type goMod struct {
	module  string
	require map[string]string // module path -> version
	replace map[string]string // module path -> replacement version, "" for a directory
}

// readGoMod reads the module, require and replace directives of a go.mod file, single-line or in
// blocks (enough for the go.mod files the go command writes; quoted paths are not handled).
func readGoMod(t *testing.T, path string) goMod {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := goMod{require: map[string]string{}, replace: map[string]string{}}
	block := ""
	for line := range strings.Lines(string(b)) {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case block != "" && f[0] == ")":
			block = ""
			continue
		case block == "" && len(f) == 2 && f[1] == "(":
			block = f[0]
			continue
		}
		verb := block
		if verb == "" {
			verb, f = f[0], f[1:]
		}
		switch verb {
		case "module":
			m.module = f[0]
		case "require":
			if len(f) != 2 {
				t.Fatalf("%s: require line %q", path, line)
			}
			m.require[f[0]] = f[1]
		case "replace":
			old, repl, ok := strings.Cut(strings.Join(f, " "), "=>")
			nf := strings.Fields(repl)
			if !ok || len(nf) == 0 || len(nf) > 2 {
				t.Fatalf("%s: replace line %q", path, line)
			}
			v := ""
			if len(nf) == 2 {
				v = nf[1]
			}
			m.replace[strings.Fields(old)[0]] = v
		}
	}
	if m.module == "" || len(m.require) == 0 {
		t.Fatalf("%s: no module or no requirements found", path)
	}
	return m
}

// readGoSum returns the h1: hash of each "module version" line of a go.sum file (not the /go.mod lines).
func readGoSum(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 3 && !strings.HasSuffix(f[1], "/go.mod") {
			out[f[0]+" "+f[1]] = f[2]
		}
	}
	return out
}

func TestReadGoMod(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "go.mod")
	src := `module example.test/app // the app

go 1.26.0

require example.test/one v1.0.0

require (
	example.test/two v2.0.0+incompatible
	example.test/three v0.0.0-20240101000000-0123456789ab // indirect
)

replace example.test/one => ../one

replace (
	example.test/two v2.0.0+incompatible => example.test/fork v2.0.1
)
`
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	m := readGoMod(t, p)
	want := goMod{
		module: "example.test/app",
		require: map[string]string{
			"example.test/one": "v1.0.0", "example.test/two": "v2.0.0+incompatible",
			"example.test/three": "v0.0.0-20240101000000-0123456789ab",
		},
		replace: map[string]string{"example.test/one": "", "example.test/two": "v2.0.1"},
	}
	if m.module != want.module || !maps.Equal(m.require, want.require) || !maps.Equal(m.replace, want.replace) {
		t.Errorf("readGoMod = %+v, want %+v", m, want)
	}
}
