// Package imagebuild builds a connector's container image with no Docker engine, no base image and no
// registry: an OCI image index holding one image per platform, each made of two tar layers on top of
// the empty image.
//
//   - base layer (the same bytes for every connector and platform, so registries store it once):
//     /etc/passwd and /etc/group with root and nonroot (65532), /etc/nsswitch.conf, the build machine's
//     CA bundle at /etc/ssl/certs/ca-certificates.crt, Go's time zone database at /usr/share/zoneinfo.zip
//     (found through ZONEINFO in the image env) and the empty home directory /home/nonroot;
//   - binary layer: the connector's static binary at /usr/local/bin/<name>, the entrypoint.
//
// The config runs as 65532:65532 and carries the OCI labels org.opencontainers.image.{source, version,
// revision, licenses, description, created, title}. Every file's mtime and every created time is the
// one time given (SOURCE_DATE_EPOCH or the commit time), so the same inputs give the same digest.
//
// Each image has an SBOM: an SPDX 2.3 document made from its binary's Go build info (every module linked
// in with version and go.sum hash, replacements, Go version, build settings), attached as a BuildKit
// attestation manifest in the same index (see attest.go). It is as reproducible as the image: its time
// is the created time and its namespace comes from the binary's hash.
//
// There is no /tmp and nothing in the image is writable by the user: connectors write nothing to disk,
// so pods run with readOnlyRootFilesystem. A fork that needs scratch space mounts an emptyDir.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths and identities inside every image.
const (
	binDir       = "/usr/local/bin"
	CACertsPath  = "/etc/ssl/certs/ca-certificates.crt"
	ZoneinfoPath = "/usr/share/zoneinfo.zip"
	NonrootUID   = 65532
	NonrootGID   = 65532
	NonrootHome  = "/home/nonroot"
	// User is the config's user: the nonroot uid and gid, numeric so that Kubernetes' runAsNonRoot
	// check can verify it without reading /etc/passwd.
	User = "65532:65532"
)

// OCI annotation and label keys set on every image.
const (
	labelSource      = "org.opencontainers.image.source"
	LabelVersion     = "org.opencontainers.image.version"
	LabelRevision    = "org.opencontainers.image.revision"
	LabelLicenses    = "org.opencontainers.image.licenses"
	LabelDescription = "org.opencontainers.image.description"
	LabelCreated     = "org.opencontainers.image.created"
	LabelTitle       = "org.opencontainers.image.title"
)

// Binary is one platform's executable.
type Binary struct {
	Platform v1.Platform // OS linux; Architecture amd64 or arm64 (Variant v8 is implied for arm64)
	Path     string      // a static ELF executable for that platform
}

// Config describes one connector's image.
type Config struct {
	Name        string // connector name: the binary's name in the image and the image's title
	Version     string // e.g. v0.1.0: label and annotation
	Revision    string // VCS commit the binaries were built from
	Source      string // URL of the source repository
	Licenses    string // SPDX expression, e.g. Apache-2.0
	Description string // one line
	// Created is the image's creation time and every file's mtime; use SOURCE_DATE_EPOCH or the commit
	// time so that a rebuild of the same commit gives the same digest. Truncated to seconds, UTC.
	Created  time.Time
	Binaries []Binary
	// CACerts is the PEM bundle to install (e.g. Debian's /etc/ssl/certs/ca-certificates.crt).
	CACerts string
	// Zoneinfo is Go's time zone zip ($(go env GOROOT)/lib/time/zoneinfo.zip).
	Zoneinfo string
}

// Entrypoint is where the binary of connector name lives in its image.
func Entrypoint(name string) string { return path.Join(binDir, name) }

// Env is the image's environment.
func Env() []string {
	return []string{
		"PATH=" + binDir + ":/usr/bin:/bin",
		"SSL_CERT_FILE=" + CACertsPath,
		"ZONEINFO=" + ZoneinfoPath,
	}
}

// Labels returns the OCI labels (and annotations) for cfg.
func (c *Config) Labels() map[string]string {
	return map[string]string{
		labelSource:      c.Source,
		LabelVersion:     c.Version,
		LabelRevision:    c.Revision,
		LabelLicenses:    c.Licenses,
		LabelDescription: c.Description,
		LabelCreated:     c.created().Format(time.RFC3339),
		LabelTitle:       c.Name,
	}
}

func (c *Config) created() time.Time { return c.Created.UTC().Truncate(time.Second) }

func (c *Config) check() error {
	var errs []error
	req := func(v, what string) {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("missing %s", what))
		}
	}
	req(c.Name, "name")
	req(c.Version, "version")
	req(c.Revision, "revision")
	req(c.Source, "source")
	req(c.Licenses, "licenses")
	req(c.Description, "description")
	req(c.CACerts, "CA certificates path")
	req(c.Zoneinfo, "zoneinfo path")
	if strings.ContainsAny(c.Name, "/ ") {
		errs = append(errs, fmt.Errorf("name %q: must be a plain file name", c.Name))
	}
	if c.Created.IsZero() {
		errs = append(errs, errors.New("missing created time"))
	}
	if len(c.Binaries) == 0 {
		errs = append(errs, errors.New("no binaries"))
	}
	seen := map[string]bool{}
	for _, b := range c.Binaries {
		p := b.Platform.String()
		if seen[p] {
			errs = append(errs, fmt.Errorf("platform %s given twice", p))
		}
		seen[p] = true
	}
	return errors.Join(errs...)
}

// Build returns the image index of cfg: one image per binary, in the order given, then one SBOM
// attestation manifest per image. It checks that each binary is a static ELF executable with Go build
// info for its platform, so an arm64 image never holds an amd64 binary.
func Build(cfg Config) (v1.ImageIndex, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("checking image config of %s: %w", cfg.Name, err)
	}
	base, err := baseLayer(&cfg)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds, atts []mutate.IndexAddendum
	for _, b := range cfg.Binaries {
		plat := normalize(b.Platform)
		img, bin, err := buildImage(&cfg, base, plat, b.Path)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &plat},
		})
		bi, err := readBuildInfo(b.Path, bin)
		if err != nil {
			return nil, err
		}
		doc, err := sbom(&cfg, plat, bin, bi)
		if err != nil {
			return nil, err
		}
		att, err := attestation(&cfg, plat, img, doc)
		if err != nil {
			return nil, err
		}
		atts = append(atts, att)
	}
	// Images first, then their attestations, as BuildKit orders them.
	idx = mutate.AppendManifests(idx, append(adds, atts...)...)
	return mutate.Annotations(idx, cfg.Labels()).(v1.ImageIndex), nil
}

// normalize fills the variant Go's arm64 port targets, as registries and runtimes expect it.
func normalize(p v1.Platform) v1.Platform {
	if p.OS == "" {
		p.OS = "linux"
	}
	if p.Architecture == "arm64" && p.Variant == "" {
		p.Variant = "v8"
	}
	return p
}

// buildImage returns the image of cfg for plat with the binary at binPath, and the binary's bytes.
func buildImage(cfg *Config, base v1.Layer, plat v1.Platform, binPath string) (v1.Image, []byte, error) {
	fail := func(err error) (v1.Image, []byte, error) { return nil, nil, err }
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return fail(fmt.Errorf("reading binary %s: %w", binPath, err))
	}
	if err := checkELF(bin, plat.Architecture); err != nil {
		return fail(fmt.Errorf("checking binary %s for %s: %w", binPath, plat.String(), err))
	}
	created := cfg.created()
	entry := Entrypoint(cfg.Name)
	binLayer, err := layer(created, []file{
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/local/", mode: 0o755, dir: true},
		{name: "usr/local/bin/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(entry, "/"), mode: 0o755, data: bin},
	})
	if err != nil {
		return fail(fmt.Errorf("making binary layer of %s for %s: %w", cfg.Name, plat.String(), err))
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "imagebuild: passwd, group, nsswitch.conf, CA certificates, Go zoneinfo",
			Comment:   "base",
		}},
		mutate.Addendum{Layer: binLayer, MediaType: types.OCILayer, History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "imagebuild: " + entry,
			Comment:   cfg.Name + " " + cfg.Version,
		}},
	)
	if err != nil {
		return fail(fmt.Errorf("appending layers of %s for %s: %w", cfg.Name, plat.String(), err))
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fail(fmt.Errorf("reading config of %s for %s: %w", cfg.Name, plat.String(), err))
	}
	cf = cf.DeepCopy()
	cf.Architecture = plat.Architecture
	cf.OS = plat.OS
	cf.Variant = plat.Variant
	cf.Created = v1.Time{Time: created}
	cf.Author = ""
	cf.Config = v1.Config{
		User:       User,
		Entrypoint: []string{entry},
		Env:        Env(),
		WorkingDir: "/",
		Labels:     cfg.Labels(),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return fail(fmt.Errorf("setting config of %s for %s: %w", cfg.Name, plat.String(), err))
	}
	return mutate.Annotations(img, cfg.Labels()).(v1.Image), bin, nil
}

// checkELF returns an error unless bin is a statically linked ELF executable for Go architecture arch.
func checkELF(bin []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("reading ELF header: %w", err)
	}
	defer f.Close()
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("unsupported architecture %q", arch)
	}
	if f.Machine != want {
		return fmt.Errorf("ELF machine is %s, want %s for %s", f.Machine, want, arch)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type is %s, want an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (has an interpreter): build with CGO_ENABLED=0")
		}
	}
	return nil
}

var elfMachines = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"386":     elf.EM_386,
	"arm":     elf.EM_ARM,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
	"riscv64": elf.EM_RISCV,
}

// baseLayer is the platform-independent layer.
func baseLayer(cfg *Config) (v1.Layer, error) {
	certs, err := os.ReadFile(cfg.CACerts)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificates %s: %w", cfg.CACerts, err)
	}
	if !bytes.Contains(certs, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("reading CA certificates %s: no PEM certificate in it", cfg.CACerts)
	}
	zi, err := os.ReadFile(cfg.Zoneinfo)
	if err != nil {
		return nil, fmt.Errorf("reading zoneinfo %s: %w", cfg.Zoneinfo, err)
	}
	if !bytes.HasPrefix(zi, []byte("PK")) {
		return nil, fmt.Errorf("reading zoneinfo %s: not a zip file", cfg.Zoneinfo)
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n",
		NonrootUID, NonrootGID, NonrootHome)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonrootGID)
	l, err := layer(cfg.created(), []file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(CACertsPath, "/"), mode: 0o644, data: certs},
		{name: "home/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(NonrootHome, "/") + "/", mode: 0o700, dir: true, uid: NonrootUID, gid: NonrootGID},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/share/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(ZoneinfoPath, "/"), mode: 0o644, data: zi},
	})
	if err != nil {
		return nil, fmt.Errorf("making base layer: %w", err)
	}
	return l, nil
}

type file struct {
	name     string // relative, directories end in /
	mode     int64
	dir      bool
	data     []byte
	uid, gid int
}

// layer writes files, in the order given, into an uncompressed tar with fixed times and owners, and
// returns it as a gzip OCI layer. Compression is deterministic for a given Go version.
func layer(mtime time.Time, files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name:    f.name,
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: mtime,
		}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("writing tar header %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("writing tar entry %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing tar: %w", err)
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}
