package imagebuild

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// distDir is set by `make images` (go test -run TestDist ./imagebuild -args -dist=$(DIST)); without it
// TestDist skips, so `make test` never depends on built images.
var distDir = flag.String("dist", "", "directory written by make images; TestDist checks every image in <dist>/oci")

// srcDir holds the connectors' modules, so TestDist can check each image's SBOM against its go.mod.
var srcDir = flag.String("src", filepath.Join("..", ".."), "directory holding <connector>/go.mod for every image in -dist")

// TestDist opens every image `make images` wrote and checks the same properties as the unit tests
// (SBOMs included), that each SBOM lists numaflow-go, the broker SDK and every module at the version
// of the connector's go.mod, and that the connector binary (for the build machine's platform) answers
// --version with the image's version.
func TestDist(t *testing.T) {
	if *distDir == "" {
		t.Skip("no -dist given (make images passes it)")
	}
	dirs, err := filepath.Glob(filepath.Join(*distDir, "oci", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no image layouts in %s/oci", *distDir)
	}
	for _, dir := range dirs {
		connector := filepath.Base(dir)
		t.Run(connector, func(t *testing.T) {
			idx, ref, err := ReadLayout(dir)
			if err != nil {
				t.Fatal(err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			a := im.Annotations
			created, err := time.Parse(time.RFC3339, a[LabelCreated])
			if err != nil {
				t.Fatalf("created annotation %q: %v", a[LabelCreated], err)
			}
			for _, k := range []string{labelSource, LabelRevision, LabelLicenses, LabelDescription} {
				if strings.TrimSpace(a[k]) == "" {
					t.Errorf("annotation %s is empty", k)
				}
			}
			want := expectation{
				name: connector, version: ref, revision: a[LabelRevision], source: a[labelSource],
				licenses: a[LabelLicenses], description: a[LabelDescription], created: created,
				files: map[string][]byte{},
			}
			if certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
				want.files[CACertsPath] = certs
			}
			images := checkIndex(t, idx, want)
			var sizes []string
			for arch, img := range images {
				sizes = append(sizes, fmt.Sprintf("%s %s (SBOM %.1f KiB)", arch, mib(img.size), float64(img.sbomSize)/1024))
				if img.sbom != nil {
					checkSBOMAgainstModule(t, img.sbom, filepath.Join(*srcDir, connector), connector)
				}
			}
			t.Logf("%s:%s %v", connector, ref, sizes)

			img, ok := images[runtime.GOARCH]
			if runtime.GOOS != "linux" || !ok {
				t.Skip("cannot run the image's binaries here")
			}
			bin := filepath.Join(t.TempDir(), connector)
			if err := os.WriteFile(bin, img.files[Entrypoint(connector)], 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --version: %v: %s", connector, err, out)
			}
			if !strings.Contains(string(out), ref) {
				t.Errorf("%s --version printed %q, want it to contain the image version %s", connector, out, ref)
			}
		})
	}
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }
