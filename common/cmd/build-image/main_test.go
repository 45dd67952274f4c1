package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/numaflow-connectors/sources/common/imagebuild"
)

// buildTiny cross-compiles a trivial program for linux/arch.
func buildTiny(t *testing.T, dir, arch string) string {
	t.Helper()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module example.test/tiny\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() { println(\"tiny\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, arch, "tiny")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOWORK=off", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s: %v\n%s", arch, err, b)
	}
	return out
}

func testCA(t *testing.T, dir string) string {
	t.Helper()
	// A syntactically PEM bundle is all the builder checks; the library's tests use a real certificate.
	p := filepath.Join(dir, "ca.crt")
	pemData := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(p, []byte(pemData), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBuildInspectPush runs the commands as make does: build writes the layout and tarballs, inspect
// reads them back, push uploads the index to a registry on 127.0.0.1 under the layout's version.
func TestBuildInspectPush(t *testing.T) {
	dir := t.TempDir()
	amd, arm := buildTiny(t, dir, "amd64"), buildTiny(t, dir, "arm64")
	out := filepath.Join(dir, "dist")
	var stdout, stderr bytes.Buffer
	ctx := t.Context()
	err := run(ctx, []string{"build", "-name", "tiny", "-version", "v0.3.0", "-revision", "abc123",
		"-created", "1700000000", "-description", "  A tiny\n test  image. ", "-cacerts", testCA(t, dir),
		"-bin", "linux/amd64=" + amd, "-bin", "linux/arm64=" + arm, "-out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("build: %v\nstderr: %s", err, stderr.String())
	}
	for _, f := range []string{"oci/tiny/index.json", "oci/tiny/oci-layout", "tiny-linux-amd64.tar", "tiny-linux-arm64.tar"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("build did not write %s: %v", f, err)
		}
	}
	digest := regexp.MustCompile(`index (sha256:[0-9a-f]{64})`).FindStringSubmatch(stdout.String())
	if digest == nil {
		t.Fatalf("build printed no index digest:\n%s", stdout.String())
	}

	idx, ref, err := imagebuild.ReadLayout(filepath.Join(out, "oci", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	if ref != "v0.3.0" {
		t.Errorf("layout ref = %q, want v0.3.0", ref)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := im.Annotations[imagebuild.LabelDescription]; got != "A tiny test image." {
		t.Errorf("description = %q, want whitespace collapsed", got)
	}
	if got := im.Annotations[imagebuild.LabelCreated]; got != "2023-11-14T22:13:20Z" {
		t.Errorf("created = %q, want 2023-11-14T22:13:20Z", got)
	}

	stdout.Reset()
	if err := run(ctx, []string{"inspect", "-layout", filepath.Join(out, "oci", "tiny")}, &stdout, &stderr); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	if !strings.Contains(stdout.String(), digest[1]) || !strings.Contains(stdout.String(), "linux/arm64/v8") {
		t.Errorf("inspect output lacks the digest or a platform:\n%s", stdout.String())
	}
	for _, p := range []string{"linux/amd64", "linux/arm64/v8"} {
		if !regexp.MustCompile(`attestation +sha256:[0-9a-f]{64}  SBOM of ` + p + ` \(SPDX JSON, [0-9.]+ KiB\)`).MatchString(stdout.String()) {
			t.Errorf("inspect output lists no SBOM attestation of %s:\n%s", p, stdout.String())
		}
	}

	stdout.Reset()
	if err := run(ctx, []string{"sbom", "-layout", filepath.Join(out, "oci", "tiny"), "-platform", "linux/arm64"}, &stdout, &stderr); err != nil {
		t.Fatalf("sbom: %v\nstderr: %s", err, stderr.String())
	}
	var doc struct {
		SPDXVersion string `json:"spdxVersion"`
		Name        string `json:"name"`
		Packages    []struct {
			Name        string `json:"name"`
			VersionInfo string `json:"versionInfo"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("sbom printed no JSON: %v\n%s", err, stdout.String())
	}
	if doc.SPDXVersion != "SPDX-2.3" || !strings.Contains(doc.Name, "arm64") || len(doc.Packages) < 2 ||
		doc.Packages[0].Name != "example.test/tiny" || doc.Packages[0].VersionInfo != "v0.3.0" {
		t.Errorf("sbom printed %+v, want the SPDX document of tiny v0.3.0 for arm64", doc)
	}

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	stdout.Reset()
	if err := run(ctx, []string{"push", "-layout", filepath.Join(out, "oci", "tiny"), "-registry", host + "/team", "-insecure"}, &stdout, &stderr); err != nil {
		t.Fatalf("push: %v\nstderr: %s", err, stderr.String())
	}
	tag, err := name.NewTag(host+"/team/tiny:v0.3.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := remote.Index(tag, remote.WithContext(pctx))
	if err != nil {
		t.Fatalf("reading the pushed index: %v", err)
	}
	if d, _ := got.Digest(); d.String() != digest[1] {
		t.Errorf("pushed digest %s, built %s", d, digest[1])
	}
	if _, err := imagebuild.SBOM(got, v1.Platform{OS: "linux", Architecture: "amd64"}); err != nil {
		t.Errorf("the pushed index has no SBOM for linux/amd64: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"build", "-bogus"},
		{"push", "-layout", "x"},
		{"sbom", "-bogus"},
		{"version"},
	} {
		err := run(t.Context(), args, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
	err := run(t.Context(), []string{"build", "-name", "x", "-version", "v1", "-created", "yesterday"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-created") {
		t.Errorf("bad -created: %v", err)
	}
}

// TestVersionFromGit checks the version rule against a real repository: no tag, at a tag, after it,
// with uncommitted changes, and ignoring another connector's newer tag.
func TestVersionFromGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	repo := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.test",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.test", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	commit := func(msg string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(repo, "f"), []byte(msg), 0o644); err != nil {
			t.Fatal(err)
		}
		git("add", "f")
		git("commit", "-q", "-m", msg)
	}
	version := func() string {
		t.Helper()
		var out bytes.Buffer
		if err := run(t.Context(), []string{"version", "sqs-source"}, &out, io.Discard); err != nil {
			t.Fatalf("version: %v", err)
		}
		return strings.TrimSpace(out.String())
	}

	git("init", "-q")
	t.Chdir(repo) // build-image version runs git in the working directory, as make does
	commit("one")
	short := git("rev-parse", "--short=12", "HEAD")
	if got := version(); got != "v0.0.0-"+short {
		t.Errorf("no tag: %q, want v0.0.0-%s", got, short)
	}
	git("tag", "-a", "sqs-source/v0.1.0", "-m", "r")
	git("tag", "-a", "pubsub-source/v0.9.0", "-m", "r")
	if got := version(); got != "v0.1.0" {
		t.Errorf("at the tag: %q, want v0.1.0", got)
	}
	commit("two")
	short = git("rev-parse", "--short=12", "HEAD")
	if got := version(); got != "v0.1.0-1-g"+short {
		t.Errorf("after the tag: %q, want v0.1.0-1-g%s", got, short)
	}
	if err := os.WriteFile(filepath.Join(repo, "f"), []byte("dirty"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := version(); got != "v0.1.0-1-g"+short+"-dirty" {
		t.Errorf("dirty: %q, want v0.1.0-1-g%s-dirty", got, short)
	}
}
