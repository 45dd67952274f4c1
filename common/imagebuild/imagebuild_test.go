package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tinyMain is the test binary packed into images: it answers --version like a connector does, and
// --tz NAME loads a time zone (through ZONEINFO, as it would in the image).
const tinyMain = `package main

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

var version = "unset"

func main() {
	switch {
	case len(os.Args) == 2 && os.Args[1] == "--version":
		fmt.Printf("tiny %s %s/%s\n", version, runtime.GOOS, runtime.GOARCH)
	case len(os.Args) == 3 && os.Args[1] == "--tz":
		loc, err := time.LoadLocation(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(time.Date(2024, 7, 1, 12, 0, 0, 0, time.UTC).In(loc).Format("-0700"))
	default:
		os.Exit(2)
	}
}
`

const tinyVersion = "v1.2.3"

var (
	tinyOnce sync.Once
	tinyBins map[string]string
	tinyErr  error
	tinyDir  string
)

// tinyBinaries builds tinyMain for linux/amd64 and linux/arm64 once per test binary run.
func tinyBinaries(t *testing.T) map[string]string {
	t.Helper()
	tinyOnce.Do(func() {
		tinyDir, tinyErr = os.MkdirTemp("", "imagebuild-tiny-")
		if tinyErr != nil {
			return
		}
		src := filepath.Join(tinyDir, "src")
		if tinyErr = os.MkdirAll(src, 0o755); tinyErr != nil {
			return
		}
		if tinyErr = os.WriteFile(filepath.Join(src, "go.mod"), []byte("module example.test/tiny\n\ngo 1.26\n"), 0o644); tinyErr != nil {
			return
		}
		if tinyErr = os.WriteFile(filepath.Join(src, "main.go"), []byte(tinyMain), 0o644); tinyErr != nil {
			return
		}
		tinyBins = map[string]string{}
		for _, arch := range []string{"amd64", "arm64"} {
			out := filepath.Join(tinyDir, arch, "tiny")
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+tinyVersion, "-o", out, ".")
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOWORK=off", "GOFLAGS=")
			if b, err := cmd.CombinedOutput(); err != nil {
				tinyErr = &buildError{arch: arch, out: string(b), err: err}
				return
			}
			tinyBins[arch] = out
		}
	})
	if tinyErr != nil {
		t.Fatalf("building test binaries: %v", tinyErr)
	}
	return tinyBins
}

type buildError struct {
	arch, out string
	err       error
}

func (e *buildError) Error() string {
	return "go build for " + e.arch + ": " + e.err.Error() + "\n" + e.out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tinyDir != "" {
		_ = os.RemoveAll(tinyDir)
	}
	os.Exit(code)
}

// testCerts writes a PEM bundle with one self-signed certificate.
func testCerts(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imagebuild test CA"},
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Unix(0, 0).Add(100 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func goZoneinfo(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "lib", "time", "zoneinfo.zip")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Go's zoneinfo.zip: %v", err)
	}
	return p
}

var testCreated = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func testConfig(t *testing.T) Config {
	bins := tinyBinaries(t)
	return Config{
		Name:        "tiny",
		Version:     tinyVersion,
		Revision:    "0123456789abcdef0123456789abcdef01234567",
		Source:      "https://example.test/tiny",
		Licenses:    "Apache-2.0",
		Description: "A tiny test binary.",
		Created:     testCreated,
		Binaries: []Binary{
			{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Path: bins["amd64"]},
			{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}, Path: bins["arm64"]},
		},
		CACerts:  testCerts(t),
		Zoneinfo: goZoneinfo(t),
	}
}

func buildLayout(t *testing.T, cfg Config) (string, v1.ImageIndex) {
	t.Helper()
	idx, err := Build(cfg)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "oci", cfg.Name)
	if err := WriteLayout(dir, idx, cfg.Version); err != nil {
		t.Fatalf("WriteLayout: %v", err)
	}
	got, ref, err := ReadLayout(dir)
	if err != nil {
		t.Fatalf("ReadLayout: %v", err)
	}
	if ref != cfg.Version {
		t.Errorf("layout ref name = %q, want %q", ref, cfg.Version)
	}
	return dir, got
}

func TestBuildImageProperties(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	_, idx := buildLayout(t, cfg)
	certs, err := os.ReadFile(cfg.CACerts)
	if err != nil {
		t.Fatal(err)
	}
	zi, err := os.ReadFile(cfg.Zoneinfo)
	if err != nil {
		t.Fatal(err)
	}
	images := checkIndex(t, idx, expectation{
		name: cfg.Name, version: cfg.Version, revision: cfg.Revision, source: cfg.Source,
		licenses: cfg.Licenses, description: cfg.Description, created: cfg.Created,
		files: map[string][]byte{CACertsPath: certs, ZoneinfoPath: zi},
	})

	// The binary of the build machine's platform, taken out of the image, runs and answers --version,
	// and finds time zones through the image's ZONEINFO.
	if runtime.GOOS != "linux" {
		t.Skip("cannot run linux binaries on " + runtime.GOOS)
	}
	im, ok := images[runtime.GOARCH]
	if !ok {
		t.Skip("no image for " + runtime.GOARCH)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, cfg.Name)
	if err := os.WriteFile(bin, im.files[Entrypoint(cfg.Name)], 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v: %s", bin, err, out)
	}
	if want := "tiny " + tinyVersion + " linux/" + runtime.GOARCH; strings.TrimSpace(string(out)) != want {
		t.Errorf("--version printed %q, want %q", out, want)
	}
	zpath := filepath.Join(dir, "zoneinfo.zip")
	if err := os.WriteFile(zpath, im.files[ZoneinfoPath], 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--tz", "America/New_York")
	cmd.Env = []string{"ZONEINFO=" + zpath}
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--tz with the image's zoneinfo: %v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) != "-0400" {
		t.Errorf("America/New_York in July = %q, want -0400", out)
	}
}

type expectation struct {
	name, version, revision, source, licenses, description string
	created                                                time.Time
	files                                                  map[string][]byte // exact contents of these paths
}

type imageFiles struct {
	files    map[string][]byte
	size     int64 // compressed: manifest + config + layers
	digest   v1.Hash
	diffIDs  []v1.Hash
	config   v1.Hash
	sbom     *spdxDoc
	sbomSize int // bytes of the SPDX document
}

// checkIndex asserts every property of a connector image index and returns each image's files by
// architecture.
func checkIndex(t *testing.T, idx v1.ImageIndex, want expectation) map[string]imageFiles {
	t.Helper()
	mt, err := idx.MediaType()
	if err != nil || mt != types.OCIImageIndex {
		t.Errorf("index media type = %q (%v), want %q", mt, err, types.OCIImageIndex)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatalf("reading index manifest: %v", err)
	}
	wantLabels := map[string]string{
		labelSource: want.source, LabelVersion: want.version, LabelRevision: want.revision,
		LabelLicenses: want.licenses, LabelDescription: want.description,
		LabelCreated: want.created.UTC().Format(time.RFC3339), LabelTitle: want.name,
	}
	checkMap(t, "index annotations", im.Annotations, wantLabels)

	checkAttestations(t, im, idx)
	var plats []string
	var manifests []v1.Descriptor
	for _, d := range im.Manifests {
		if _, att := AttestedImage(d); att {
			continue
		}
		manifests = append(manifests, d)
		if d.Platform != nil {
			plats = append(plats, d.Platform.String())
		}
	}
	if !slices.Equal(plats, []string{"linux/amd64", "linux/arm64/v8"}) {
		t.Fatalf("index platforms = %v, want [linux/amd64 linux/arm64/v8]", plats)
	}

	entry := Entrypoint(want.name)
	out := map[string]imageFiles{}
	for _, d := range manifests {
		p := *d.Platform
		t.Run(p.Architecture, func(t *testing.T) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatalf("reading image: %v", err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatalf("reading manifest: %v", err)
			}
			if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
				t.Errorf("media types = %q, %q; want OCI manifest and config", m.MediaType, m.Config.MediaType)
			}
			checkMap(t, "manifest annotations", m.Annotations, wantLabels)
			if len(m.Layers) != 2 {
				t.Fatalf("%d layers, want 2 (base, binary)", len(m.Layers))
			}
			size := d.Size + m.Config.Size
			for _, l := range m.Layers {
				if l.MediaType != types.OCILayer {
					t.Errorf("layer media type = %q, want %q", l.MediaType, types.OCILayer)
				}
				size += l.Size
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatalf("reading config: %v", err)
			}
			if cf.OS != p.OS || cf.Architecture != p.Architecture || cf.Variant != p.Variant {
				t.Errorf("config platform = %s/%s/%s, want %s", cf.OS, cf.Architecture, cf.Variant, p.String())
			}
			if !cf.Created.Time.Equal(want.created) {
				t.Errorf("created = %v, want %v", cf.Created.Time, want.created)
			}
			if cf.Config.User != "65532:65532" {
				t.Errorf("user = %q, want 65532:65532", cf.Config.User)
			}
			if !slices.Equal(cf.Config.Entrypoint, []string{entry}) || len(cf.Config.Cmd) != 0 {
				t.Errorf("entrypoint, cmd = %q, %q; want [%s], none", cf.Config.Entrypoint, cf.Config.Cmd, entry)
			}
			for _, e := range []string{"ZONEINFO=/usr/share/zoneinfo.zip", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"} {
				if !slices.Contains(cf.Config.Env, e) {
					t.Errorf("env %q lacks %s", cf.Config.Env, e)
				}
			}
			checkMap(t, "config labels", cf.Config.Labels, wantLabels)
			if len(cf.History) != 2 {
				t.Errorf("%d history entries, want 2", len(cf.History))
			}
			for _, h := range cf.History {
				if !h.Created.Time.Equal(want.created) {
					t.Errorf("history created = %v, want %v", h.Created.Time, want.created)
				}
			}

			files := checkFiles(t, img, want, entry)
			bin := files[entry]
			if err := checkELF(bin, p.Architecture); err != nil {
				t.Errorf("binary in the %s image: %v", p.Architecture, err)
			}
			dg, _ := img.Digest()
			cn, _ := img.ConfigName()
			var diffIDs []v1.Hash
			for _, l := range m.Layers {
				lay, err := img.LayerByDigest(l.Digest)
				if err != nil {
					t.Fatal(err)
				}
				id, err := lay.DiffID()
				if err != nil {
					t.Fatal(err)
				}
				diffIDs = append(diffIDs, id)
			}
			doc, sbomSize := checkSBOM(t, idx, p, bin, want)
			out[p.Architecture] = imageFiles{files: files, size: size, digest: dg, config: cn, diffIDs: diffIDs, sbom: doc, sbomSize: sbomSize}
		})
	}
	return out
}

func checkMap(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s[%s] = %q, want %q", what, k, got[k], v)
		}
	}
}

// checkFiles reads the image's flattened file system and checks the exact list of entries, their
// types, modes, owners and mtimes, and the contents of the files that have known contents.
func checkFiles(t *testing.T, img v1.Image, want expectation, entry string) map[string][]byte {
	t.Helper()
	type meta struct {
		dir      bool
		mode     int64
		uid, gid int
	}
	wantMeta := map[string]meta{
		"/etc":                               {dir: true, mode: 0o755},
		"/etc/group":                         {mode: 0o644},
		"/etc/nsswitch.conf":                 {mode: 0o644},
		"/etc/passwd":                        {mode: 0o644},
		"/etc/ssl":                           {dir: true, mode: 0o755},
		"/etc/ssl/certs":                     {dir: true, mode: 0o755},
		"/etc/ssl/certs/ca-certificates.crt": {mode: 0o644},
		"/home":                              {dir: true, mode: 0o755},
		"/home/nonroot":                      {dir: true, mode: 0o700, uid: 65532, gid: 65532},
		"/usr":                               {dir: true, mode: 0o755},
		"/usr/share":                         {dir: true, mode: 0o755},
		"/usr/share/zoneinfo.zip":            {mode: 0o644},
		"/usr/local":                         {dir: true, mode: 0o755},
		"/usr/local/bin":                     {dir: true, mode: 0o755},
		entry:                                {mode: 0o755},
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string][]byte{}
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading image file system: %v", err)
		}
		p := "/" + strings.Trim(h.Name, "/")
		seen[p] = true
		wm, ok := wantMeta[p]
		if !ok {
			t.Errorf("unexpected entry %s in the image", p)
			continue
		}
		isDir := h.Typeflag == tar.TypeDir
		if isDir != wm.dir || (!isDir && h.Typeflag != tar.TypeReg) {
			t.Errorf("%s: tar type %q, want dir=%v", p, h.Typeflag, wm.dir)
		}
		if h.Mode&0o7777 != wm.mode || h.Uid != wm.uid || h.Gid != wm.gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o %d:%d", p, h.Mode&0o7777, h.Uid, h.Gid, wm.mode, wm.uid, wm.gid)
		}
		if !h.ModTime.Equal(want.created) {
			t.Errorf("%s: mtime %v, want %v", p, h.ModTime, want.created)
		}
		if !isDir {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[p] = b
		}
	}
	for p := range wantMeta {
		if !seen[p] {
			t.Errorf("%s missing from the image", p)
		}
	}
	for p, b := range want.files {
		if !bytes.Equal(files[p], b) {
			t.Errorf("%s: %d bytes differ from the %d given", p, len(files[p]), len(b))
		}
	}
	if !strings.Contains(string(files["/etc/passwd"]), "\nnonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot 65532: %q", files["/etc/passwd"])
	}
	if !strings.Contains(string(files["/etc/group"]), "\nnonroot:x:65532:") {
		t.Errorf("/etc/group has no nonroot 65532: %q", files["/etc/group"])
	}
	return files
}

// TestBuildIsReproducible builds the same inputs twice into separate layouts: every blob and the
// index digest are identical; another created time gives another digest.
func TestBuildIsReproducible(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	dir1, idx1 := buildLayout(t, cfg)
	dir2, idx2 := buildLayout(t, cfg)
	d1, _ := idx1.Digest()
	d2, _ := idx2.Digest()
	if d1 != d2 {
		t.Errorf("two builds gave %s and %s", d1, d2)
	}
	if a, b := treeDigest(t, dir1), treeDigest(t, dir2); a != b {
		t.Errorf("OCI layouts differ:\n%s\n---\n%s", a, b)
	}

	// The SBOMs are part of the index, byte for byte the same; their time is the created time.
	arm := v1.Platform{OS: "linux", Architecture: "arm64"}
	s1, err1 := SBOM(idx1, arm)
	s2, err2 := SBOM(idx2, arm)
	if err1 != nil || err2 != nil || !bytes.Equal(s1, s2) {
		t.Errorf("two builds gave different SBOMs (%v, %v)", err1, err2)
	}

	later := cfg
	later.Created = cfg.Created.Add(time.Second)
	_, idx3 := buildLayout(t, later)
	if d3, _ := idx3.Digest(); d3 == d1 {
		t.Errorf("another created time gave the same digest %s", d3)
	}
	s3, err := SBOM(idx3, arm)
	if err != nil || !bytes.Contains(s3, []byte(`"created":"`+later.Created.Format(time.RFC3339)+`"`)) {
		t.Errorf("SBOM of a later build does not carry its created time %s (%v)", later.Created.Format(time.RFC3339), err)
	}
}

// treeDigest lists every file of dir with its contents' length and a short prefix hash.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h, _, err := v1.SHA256(bytes.NewReader(data))
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b.WriteString(rel + " " + h.String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestTarballsHoldTheSameImages: each docker-loadable tarball holds its platform's image (same config
// and layers as in the index), tagged as asked.
func TestTarballsHoldTheSameImages(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	_, idx := buildLayout(t, cfg)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("ghcr.io/numaflow-connectors/tiny:" + cfg.Version)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths, err := WriteTarballs(dir, cfg.Name, tag, idx)
	if err != nil {
		t.Fatalf("WriteTarballs: %v", err)
	}
	want := []string{filepath.Join(dir, "tiny-linux-amd64.tar"), filepath.Join(dir, "tiny-linux-arm64.tar")}
	if !slices.Equal(paths, want) {
		t.Fatalf("tarballs = %v, want %v", paths, want)
	}
	for i, p := range paths {
		fromTar, err := tarball.ImageFromPath(p, &tag)
		if err != nil {
			t.Fatalf("loading %s: %v", p, err)
		}
		fromIdx, err := idx.Image(im.Manifests[i].Digest)
		if err != nil {
			t.Fatal(err)
		}
		c1, _ := fromTar.ConfigName()
		c2, _ := fromIdx.ConfigName()
		if c1 != c2 {
			t.Errorf("%s: config %s, index image has %s", p, c1, c2)
		}
		m1, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(p) })
		if err != nil {
			t.Fatal(err)
		}
		if len(m1) != 1 || !slices.Equal(m1[0].RepoTags, []string{tag.String()}) {
			t.Errorf("%s: manifest.json %+v, want one image tagged %s", p, m1, tag)
		}
	}
}

// TestPush pushes the index to an in-process registry on 127.0.0.1 and reads it back by tag.
func TestPush(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	_, idx := buildLayout(t, cfg)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/team/tiny:"+cfg.Version, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := Push(ctx, idx, ref); err != nil {
		t.Fatalf("Push: %v", err)
	}
	got, err := remote.Index(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("reading pushed index: %v", err)
	}
	d1, _ := idx.Digest()
	d2, _ := got.Digest()
	if d1 != d2 {
		t.Errorf("pushed index digest %s, built %s", d2, d1)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
	if err != nil {
		t.Fatalf("pulling linux/arm64: %v", err)
	}
	if cf, err := img.ConfigFile(); err != nil || cf.Architecture != "arm64" {
		t.Errorf("pulled linux/arm64 config: %+v, %v", cf, err)
	}
	// The attestations travel with the index: the pushed one has each platform's SBOM.
	for _, arch := range []string{"amd64", "arm64"} {
		local, err1 := SBOM(idx, v1.Platform{OS: "linux", Architecture: arch})
		pushed, err2 := SBOM(got, v1.Platform{OS: "linux", Architecture: arch})
		if err1 != nil || err2 != nil || !bytes.Equal(local, pushed) {
			t.Errorf("SBOM of linux/%s after the push: %v, %v", arch, err1, err2)
		}
	}
}

func TestBuildRejects(t *testing.T) {
	t.Parallel()
	base := testConfig(t)
	bins := tinyBinaries(t)
	// The tiny binary with its build info's magic overwritten: a static ELF that is not a Go binary.
	raw, err := os.ReadFile(bins["amd64"])
	if err != nil {
		t.Fatal(err)
	}
	magic := []byte("\xff Go buildinf:")
	if !bytes.Contains(raw, magic) {
		t.Fatal("no build info magic in the test binary")
	}
	notGo := filepath.Join(t.TempDir(), "not-go")
	if err := os.WriteFile(notGo, bytes.ReplaceAll(raw, magic, []byte("\xff Go nothing:.")), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		mod  func(c *Config)
		want string
	}{
		"no Go build info": {func(c *Config) {
			c.Binaries = []Binary{{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Path: notGo}}
		}, "reading Go build info of " + notGo},
		"amd64 binary as arm64": {func(c *Config) {
			c.Binaries = []Binary{{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}, Path: bins["amd64"]}}
		}, "ELF machine is EM_X86_64, want EM_AARCH64"},
		"dynamically linked": {func(c *Config) {
			c.Binaries = []Binary{{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Path: "/bin/true"}}
		}, "dynamically linked"},
		"not an ELF": {func(c *Config) {
			c.Binaries = []Binary{{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Path: c.CACerts}}
		}, "reading ELF header"},
		"missing labels":     {func(c *Config) { c.Licenses, c.Revision = "", "" }, "missing revision\nmissing licenses"},
		"no created time":    {func(c *Config) { c.Created = time.Time{} }, "missing created time"},
		"platform twice":     {func(c *Config) { c.Binaries = append(c.Binaries, c.Binaries[0]) }, "platform linux/amd64 given twice"},
		"zoneinfo not a zip": {func(c *Config) { c.Zoneinfo = c.CACerts }, "not a zip file"},
		"certs not PEM":      {func(c *Config) { c.CACerts = c.Zoneinfo }, "no PEM certificate"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if name == "dynamically linked" && (runtime.GOARCH != "amd64" || runtime.GOOS != "linux") {
				t.Skip("uses the build machine's /bin/true as a dynamic amd64 binary")
			}
			c := base
			c.Binaries = slices.Clone(base.Binaries)
			tc.mod(&c)
			_, err := Build(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestWriteLayoutRefusesOtherDirectories(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	idx, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keep := filepath.Join(dir, "keep.txt")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(dir, idx, "v1"); err == nil || !strings.Contains(err.Error(), "not an OCI layout") {
		t.Errorf("WriteLayout over a non-layout directory: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the directory's file is gone: %v", err)
	}
}

func TestTagFromDescribe(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want, err string }{
		{"sqs-source/v0.1.0", "v0.1.0", ""},
		{"sqs-source/v0.1.0\n", "v0.1.0", ""},
		{"sqs-source/v1.2.3-rc.1", "v1.2.3-rc.1", ""},
		{"sqs-source/v0.1.0-3-g0123456789ab-dirty", "v0.1.0-3-g0123456789ab-dirty", ""},
		{"0123456789ab", "v0.0.0-0123456789ab", ""},
		{"0123456789ab-dirty", "v0.0.0-0123456789ab-dirty", ""},
		{"pubsub-source/v0.1.0", "", "neither"},
		{"sqs-source/0.1.0", "", "not vMAJOR.MINOR.PATCH"},
		{"", "", "neither"},
	}
	for _, c := range cases {
		got, err := TagFromDescribe("sqs-source", c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("TagFromDescribe(%q) error = %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("TagFromDescribe(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}
