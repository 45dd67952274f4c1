package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// refNameAnnotation names the tag of an image in an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// WriteLayout writes idx as the only entry of a fresh OCI image layout in dir, annotated with tag as
// its ref name (so `skopeo copy oci:dir:tag` and similar tools find it). An existing dir is replaced only
// when it is an OCI layout (or empty), so a wrong path never deletes anything else.
func WriteLayout(dir string, idx v1.ImageIndex, tag string) error {
	if err := clearLayout(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("writing OCI layout %s: %w", dir, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: tag})); err != nil {
		return fmt.Errorf("writing image index to OCI layout %s: %w", dir, err)
	}
	return nil
}

func clearLayout(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("reading OCI layout %s: %w", dir, err)
	case len(entries) == 0:
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("replacing %s: not an OCI layout (no oci-layout file), refusing to delete it", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing old OCI layout %s: %w", dir, err)
	}
	return nil
}

// ReadLayout returns the image index WriteLayout stored in dir, and its ref name.
func ReadLayout(dir string) (v1.ImageIndex, string, error) {
	outer, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, "", fmt.Errorf("reading OCI layout %s: %w", dir, err)
	}
	m, err := outer.IndexManifest()
	if err != nil {
		return nil, "", fmt.Errorf("reading index.json of %s: %w", dir, err)
	}
	if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
		return nil, "", fmt.Errorf("reading OCI layout %s: want exactly one image index in index.json, found %d entries", dir, len(m.Manifests))
	}
	d := m.Manifests[0]
	idx, err := outer.ImageIndex(d.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("reading image index %s in %s: %w", d.Digest, dir, err)
	}
	return idx, d.Annotations[refNameAnnotation], nil
}

// tarballName is the file WriteTarballs writes for connector name and platform p.
func tarballName(connector string, p v1.Platform) string {
	return fmt.Sprintf("%s-%s-%s.tar", connector, p.OS, p.Architecture)
}

// WriteTarballs writes one docker-loadable tarball (`docker load -i`, the format of `docker save`) per
// image of idx into dir, each tagged ref, and returns their paths. That format holds images, not an
// index, and one tag can name only one image in it, hence one file per platform. The SBOM attestations
// are not written there (docker load has no place for them): they are in the OCI layout and pushed.
func WriteTarballs(dir, connector string, ref name.Tag, idx v1.ImageIndex) ([]string, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading image index of %s: %w", connector, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	var out []string
	for _, d := range m.Manifests {
		if _, att := AttestedImage(d); att {
			continue // docker load takes images only; the SBOM travels with the index (OCI layout, push)
		}
		if d.Platform == nil {
			return nil, fmt.Errorf("writing tarballs of %s: manifest %s has no platform", connector, d.Digest)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading image %s of %s: %w", d.Digest, connector, err)
		}
		p := filepath.Join(dir, tarballName(connector, *d.Platform))
		if err := tarball.WriteToFile(p, ref, img); err != nil {
			return nil, fmt.Errorf("writing tarball %s: %w", p, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Push uploads idx, its images and their blobs to ref (remote.WriteIndex).
func Push(ctx context.Context, idx v1.ImageIndex, ref name.Reference, opts ...remote.Option) error {
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return fmt.Errorf("pushing image index to %s: %w", ref, err)
	}
	return nil
}

var (
	tagPattern    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	semverPattern = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)
	hashPattern   = regexp.MustCompile(`^[0-9a-f]{7,40}(-dirty)?$`)
)

// DescribeArgs are the git arguments whose output TagFromDescribe reads for connector: the newest
// directory-prefixed tag of that connector reachable from HEAD, or the commit when there is none.
func DescribeArgs(connector string) []string {
	return []string{"describe", "--tags", "--match", connector + "/v*", "--dirty", "--always", "--abbrev=12"}
}

// TagFromDescribe is the rule for a connector's version (image tag and --version) when the Makefile is
// not given VERSION: the output of `git <DescribeArgs(connector)>` with the "<connector>/" prefix cut.
//
//	sqs-source/v0.1.0                         -> v0.1.0            (HEAD is the release tag)
//	sqs-source/v0.1.0-3-g0123456789ab-dirty   -> v0.1.0-3-g0123456789ab-dirty
//	0123456789ab                              -> v0.0.0-0123456789ab (no release of it yet)
func TagFromDescribe(connector, describe string) (string, error) {
	d := strings.TrimSpace(describe)
	var tag string
	switch {
	case strings.HasPrefix(d, connector+"/"):
		tag = strings.TrimPrefix(d, connector+"/")
		if !semverPattern.MatchString(tag) {
			return "", fmt.Errorf("git describe %q: tag of %s is not vMAJOR.MINOR.PATCH", d, connector)
		}
	case hashPattern.MatchString(d):
		tag = "v0.0.0-" + d
	default:
		return "", fmt.Errorf("git describe %q: neither a %s/v* tag nor a commit", d, connector)
	}
	if err := CheckTag(tag); err != nil {
		return "", err
	}
	return tag, nil
}

// CheckTag returns an error unless tag is a valid image tag.
func CheckTag(tag string) error {
	if !tagPattern.MatchString(tag) {
		return fmt.Errorf("%q is not a valid image tag", tag)
	}
	return nil
}
