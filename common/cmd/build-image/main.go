// Command build-image builds, inspects and pushes a connector's container image with no Docker engine
// (package imagebuild). `make images` and `make push` run it; a fork of one connector plus common runs
// it the same way.
//
//	build-image build -name sqs-source -version v0.1.0 -revision $(git rev-parse HEAD) \
//	    -created $(git log -1 --format=%ct) -description "..." \
//	    -bin linux/amd64=dist/bin/sqs-source/amd64/sqs-source \
//	    -bin linux/arm64=dist/bin/sqs-source/arm64/sqs-source -out dist
//	build-image inspect -layout dist/oci/sqs-source
//	build-image sbom -layout dist/oci/sqs-source -platform linux/arm64
//	build-image push -layout dist/oci/sqs-source -registry registry.example.com/team
//	build-image version sqs-source
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/numaflow-connectors/sources/common/imagebuild"
)

const usage = `usage: build-image <command> [flags]

commands:
  build    pack linux binaries into an OCI image index: <out>/oci/<name>/ (OCI layout) and
           <out>/<name>-linux-<arch>.tar (docker load, one per platform)
  inspect  print an OCI layout's digest, platforms, sizes and SBOM attestations
  sbom     print the SBOM (SPDX 2.3 JSON) of one platform's image in an OCI layout
  push     push an OCI layout's image index to <registry>/<name>:<tag>
  version  print the image tag of a connector from git (its newest <connector>/vX.Y.Z tag)

run "build-image <command> -h" for its flags
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "build-image:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "build":
		return build(args[1:], stdout, stderr)
	case "inspect":
		return inspect(args[1:], stdout, stderr)
	case "sbom":
		return printSBOM(args[1:], stdout, stderr)
	case "push":
		return push(ctx, args[1:], stdout, stderr)
	case "version":
		return version(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "unknown command %q\n%s", args[0], usage)
		return errUsage
	}
}

// binFlags collects -bin os/arch=path values.
type binFlags []imagebuild.Binary

func (b *binFlags) String() string { return fmt.Sprint(*b) }

func (b *binFlags) Set(s string) error {
	plat, path, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return fmt.Errorf("want os/arch=path, got %q", s)
	}
	p, err := v1.ParsePlatform(plat)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return fmt.Errorf("platform %q: want os/arch", plat)
	}
	*b = append(*b, imagebuild.Binary{Platform: *p, Path: path})
	return nil
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("build-image "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %q\n", fs.Args())
		return errUsage
	}
	return nil
}

func build(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("build", stderr)
	var (
		cfg     imagebuild.Config
		bins    binFlags
		created = fs.String("created", "", "creation time and every file's mtime, in Unix seconds (SOURCE_DATE_EPOCH or the commit time: git log -1 --format=%ct)")
		repo    = fs.String("repo", "ghcr.io/numaflow-connectors", "repository prefix of the tag written into the docker tarballs: <repo>/<name>:<version>")
		out     = fs.String("out", "dist", "output directory")
	)
	fs.StringVar(&cfg.Name, "name", "", "connector name (binary name in the image, image name)")
	fs.StringVar(&cfg.Version, "version", "", "version: image tag and org.opencontainers.image.version")
	fs.StringVar(&cfg.Revision, "revision", "", "VCS commit of the binaries")
	fs.StringVar(&cfg.Source, "source", "https://github.com/numaflow-connectors/sources", "source repository URL")
	fs.StringVar(&cfg.Licenses, "licenses", "Apache-2.0", "SPDX license expression")
	fs.StringVar(&cfg.Description, "description", "", "one-line description")
	fs.StringVar(&cfg.CACerts, "cacerts", "/etc/ssl/certs/ca-certificates.crt", "CA bundle (PEM) to install at "+imagebuild.CACertsPath)
	fs.StringVar(&cfg.Zoneinfo, "zoneinfo", "", "time zone zip to install at "+imagebuild.ZoneinfoPath+" (default: $(go env GOROOT)/lib/time/zoneinfo.zip)")
	fs.Var(&bins, "bin", "os/arch=path of a static binary; repeat per platform")
	if err := parse(fs, args); err != nil {
		return err
	}
	start := time.Now()
	secs, err := strconv.ParseInt(*created, 10, 64)
	if err != nil || secs <= 0 {
		return fmt.Errorf("-created %q: want Unix seconds", *created)
	}
	cfg.Created = time.Unix(secs, 0).UTC()
	cfg.Binaries = bins
	cfg.Description = strings.Join(strings.Fields(cfg.Description), " ")
	if cfg.Zoneinfo == "" {
		goroot, err := exec.Command("go", "env", "GOROOT").Output()
		if err != nil {
			return fmt.Errorf("finding Go's zoneinfo.zip (go env GOROOT): %w", err)
		}
		cfg.Zoneinfo = filepath.Join(strings.TrimSpace(string(goroot)), "lib", "time", "zoneinfo.zip")
	}
	if err := imagebuild.CheckTag(cfg.Version); err != nil {
		return fmt.Errorf("-version: %w", err)
	}
	tag, err := name.NewTag(*repo + "/" + cfg.Name + ":" + cfg.Version)
	if err != nil {
		return fmt.Errorf("-repo %q: %w", *repo, err)
	}
	idx, err := imagebuild.Build(cfg)
	if err != nil {
		return err
	}
	layoutDir := filepath.Join(*out, "oci", cfg.Name)
	if err := imagebuild.WriteLayout(layoutDir, idx, cfg.Version); err != nil {
		return err
	}
	tars, err := imagebuild.WriteTarballs(*out, cfg.Name, tag, idx)
	if err != nil {
		return err
	}
	if err := describe(stdout, layoutDir, idx, cfg.Version); err != nil {
		return err
	}
	for _, t := range tars {
		fmt.Fprintf(stdout, "  tarball %s (docker load -i; tagged %s)\n", t, tag)
	}
	fmt.Fprintf(stdout, "  built in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func inspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", stderr)
	dir := fs.String("layout", "", "OCI layout directory (dist/oci/<connector>)")
	if err := parse(fs, args); err != nil {
		return err
	}
	idx, ref, err := imagebuild.ReadLayout(*dir)
	if err != nil {
		return err
	}
	return describe(stdout, *dir, idx, ref)
}

func printSBOM(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sbom", stderr)
	dir := fs.String("layout", "", "OCI layout directory (dist/oci/<connector>)")
	plat := fs.String("platform", "linux/amd64", "platform of the image whose SBOM to print")
	if err := parse(fs, args); err != nil {
		return err
	}
	p, err := v1.ParsePlatform(*plat)
	if err != nil {
		return fmt.Errorf("-platform %q: %w", *plat, err)
	}
	idx, _, err := imagebuild.ReadLayout(*dir)
	if err != nil {
		return err
	}
	doc, err := imagebuild.SBOM(idx, *p)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, doc, "", "  "); err != nil {
		return fmt.Errorf("formatting the SBOM: %w", err)
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(stdout)
	return err
}

// describe prints the index digest and, per platform, the image digest and sizes.
func describe(w io.Writer, dir string, idx v1.ImageIndex, ref string) error {
	d, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("digesting index of %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("reading index of %s: %w", dir, err)
	}
	fmt.Fprintf(w, "%s:%s index %s\n", dir, ref, d)
	platOf := map[v1.Hash]string{}
	for _, desc := range m.Manifests {
		if _, att := imagebuild.AttestedImage(desc); !att && desc.Platform != nil {
			platOf[desc.Digest] = desc.Platform.String()
		}
	}
	for _, desc := range m.Manifests {
		if about, att := imagebuild.AttestedImage(desc); att {
			if err := describeAttestation(w, idx, desc.Digest, platOf[about]); err != nil {
				return fmt.Errorf("reading attestation %s of %s: %w", desc.Digest, dir, err)
			}
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return fmt.Errorf("reading image %s of %s: %w", desc.Digest, dir, err)
		}
		im, err := img.Manifest()
		if err != nil {
			return fmt.Errorf("reading manifest %s of %s: %w", desc.Digest, dir, err)
		}
		compressed := im.Config.Size
		var uncompressed int64
		for _, l := range im.Layers {
			compressed += l.Size
			layer, err := img.LayerByDigest(l.Digest)
			if err != nil {
				return fmt.Errorf("reading layer %s of %s: %w", l.Digest, dir, err)
			}
			n, err := uncompressedSize(layer)
			if err != nil {
				return fmt.Errorf("reading layer %s of %s: %w", l.Digest, dir, err)
			}
			uncompressed += n
		}
		plat := "?"
		if desc.Platform != nil {
			plat = desc.Platform.String()
		}
		fmt.Fprintf(w, "  %-15s %s  compressed %s  uncompressed %s\n", plat, desc.Digest, mib(compressed), mib(uncompressed))
	}
	return nil
}

// describeAttestation prints which image (by platform) an attestation manifest is about and its SBOM's
// size.
func describeAttestation(w io.Writer, idx v1.ImageIndex, att v1.Hash, plat string) error {
	p, err := v1.ParsePlatform(plat)
	if err != nil {
		return errors.New("it refers to no image of the index")
	}
	doc, err := imagebuild.SBOM(idx, *p)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  %-15s %s  SBOM of %s (SPDX JSON, %s)\n", "attestation", att, plat, kib(len(doc)))
	return nil
}

func kib(n int) string { return fmt.Sprintf("%.1f KiB", float64(n)/1024) }

func uncompressedSize(l v1.Layer) (int64, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(io.Discard, rc)
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

func push(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("push", stderr)
	var (
		dir      = fs.String("layout", "", "OCI layout directory (dist/oci/<connector>)")
		registry = fs.String("registry", "", "registry and path prefix, e.g. ghcr.io/numaflow-connectors: pushes <registry>/<connector>:<tag>")
		tagFlag  = fs.String("tag", "", "tag to push (default: the layout's ref name, the version it was built with)")
		insecure = fs.Bool("insecure", false, "allow plain HTTP (a local test registry)")
	)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *registry == "" {
		fmt.Fprintln(stderr, "push needs -layout and -registry")
		return errUsage
	}
	idx, ref, err := imagebuild.ReadLayout(*dir)
	if err != nil {
		return err
	}
	if *tagFlag != "" {
		ref = *tagFlag
	}
	connector := filepath.Base(filepath.Clean(*dir))
	var opts []name.Option
	if *insecure {
		opts = append(opts, name.Insecure)
	}
	tag, err := name.NewTag(strings.TrimSuffix(*registry, "/")+"/"+connector+":"+ref, opts...)
	if err != nil {
		return fmt.Errorf("parsing image reference: %w", err)
	}
	if err := imagebuild.Push(ctx, idx, tag, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("digesting index of %s: %w", *dir, err)
	}
	fmt.Fprintf(stdout, "pushed %s@%s\n", tag, d)
	return nil
}

func version(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: build-image version <connector>")
		return errUsage
	}
	connector := fs.Arg(0)
	out, err := exec.CommandContext(ctx, "git", imagebuild.DescribeArgs(connector)...).Output()
	if err != nil {
		return fmt.Errorf("running git describe for %s: %w", connector, err)
	}
	tag, err := imagebuild.TagFromDescribe(connector, string(out))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tag)
	return nil
}
