package imagebuild

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Each image's SBOM is attached the way BuildKit attaches attestations, which is what `docker buildx
// imagetools inspect --format '{{json .SBOM}}'`, Docker Scout and registries that display attestations
// read: one more manifest in the index per image, with platform unknown/unknown and annotations naming
// the image it describes, whose single layer is an in-toto statement carrying the SPDX document as its
// predicate. Runtimes never pull it (no runnable platform matches unknown/unknown).
const (
	annotationRefType   = "vnd.docker.reference.type"
	annotationRefDigest = "vnd.docker.reference.digest"
	refTypeAttestation  = "attestation-manifest"

	inTotoMediaType     = types.MediaType("application/vnd.in-toto+json")
	inTotoPredicateKey  = "in-toto.io/predicate-type"
	inTotoStatementType = "https://in-toto.io/Statement/v0.1"
	spdxPredicateType   = "https://spdx.dev/Document"
	unknownPlatform     = "unknown"
)

type inTotoStatement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Subject       []inTotoSubject `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

type inTotoSubject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// AttestedImage reports whether d, an entry of an image index, is an attestation manifest (the SBOM of
// an image) rather than a platform's image, and if so the digest of the image it is about (zero when
// its annotation holds none).
func AttestedImage(d v1.Descriptor) (v1.Hash, bool) {
	if d.Annotations[annotationRefType] != refTypeAttestation {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(d.Annotations[annotationRefDigest])
	if err != nil {
		return v1.Hash{}, true
	}
	return h, true
}

// attestation returns the index entry holding sbomDoc for img, the image of cfg for plat.
func attestation(cfg *Config, plat v1.Platform, img v1.Image, sbomDoc []byte) (mutate.IndexAddendum, error) {
	fail := func(err error) (mutate.IndexAddendum, error) {
		return mutate.IndexAddendum{}, fmt.Errorf("making the SBOM attestation of %s for %s: %w", cfg.Name, plat.String(), err)
	}
	dg, err := img.Digest()
	if err != nil {
		return fail(err)
	}
	stmt, err := json.Marshal(inTotoStatement{
		Type:          inTotoStatementType,
		PredicateType: spdxPredicateType,
		Subject: []inTotoSubject{{
			Name:   "pkg:docker/" + cfg.Name + "@" + cfg.Version + "?platform=" + url.QueryEscape(plat.String()),
			Digest: map[string]string{dg.Algorithm: dg.Hex},
		}},
		Predicate: sbomDoc,
	})
	if err != nil {
		return fail(err)
	}
	att := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	att = mutate.ConfigMediaType(att, types.OCIConfigJSON)
	att, err = mutate.Append(att, mutate.Addendum{
		Layer:       static.NewLayer(stmt, inTotoMediaType),
		MediaType:   inTotoMediaType,
		Annotations: map[string]string{inTotoPredicateKey: spdxPredicateType},
	})
	if err != nil {
		return fail(err)
	}
	cf, err := att.ConfigFile()
	if err != nil {
		return fail(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = unknownPlatform, unknownPlatform
	cf.Created = v1.Time{Time: cfg.created()}
	cf.History = nil
	if att, err = mutate.ConfigFile(att, cf); err != nil {
		return fail(err)
	}
	return mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
		Platform: &v1.Platform{OS: unknownPlatform, Architecture: unknownPlatform},
		Annotations: map[string]string{
			annotationRefType:   refTypeAttestation,
			annotationRefDigest: dg.String(),
		},
	}}, nil
}

// SBOM returns the SPDX JSON document attached to the image of idx for platform p (linux/arm64 finds
// linux/arm64/v8).
func SBOM(idx v1.ImageIndex, p v1.Platform) ([]byte, error) {
	p = normalize(p)
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading image index: %w", err)
	}
	var image *v1.Descriptor
	for i, d := range m.Manifests {
		if _, att := AttestedImage(d); !att && d.Platform != nil && d.Platform.Equals(p) {
			image = &m.Manifests[i]
			break
		}
	}
	if image == nil {
		return nil, fmt.Errorf("reading the SBOM for %s: no image for that platform in the index", p.String())
	}
	for _, d := range m.Manifests {
		if about, att := AttestedImage(d); !att || about != image.Digest {
			continue
		}
		doc, err := readSBOMAttestation(idx, d.Digest, image.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading the SBOM for %s: %w", p.String(), err)
		}
		return doc, nil
	}
	return nil, fmt.Errorf("reading the SBOM for %s: no attestation manifest refers to its image %s", p.String(), image.Digest)
}

// readSBOMAttestation returns the SPDX predicate of attestation manifest att, which must be about
// image subject.
func readSBOMAttestation(idx v1.ImageIndex, att, subject v1.Hash) ([]byte, error) {
	img, err := idx.Image(att)
	if err != nil {
		return nil, fmt.Errorf("reading attestation manifest %s: %w", att, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading attestation manifest %s: %w", att, err)
	}
	for _, l := range m.Layers {
		if l.MediaType != inTotoMediaType || l.Annotations[inTotoPredicateKey] != spdxPredicateType {
			continue
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading attestation layer %s: %w", l.Digest, err)
		}
		rc, err := layer.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("reading attestation layer %s: %w", l.Digest, err)
		}
		raw, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("reading attestation layer %s: %w", l.Digest, err)
		}
		var st inTotoStatement
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("decoding in-toto statement %s: %w", l.Digest, err)
		}
		if st.PredicateType != spdxPredicateType || len(st.Predicate) == 0 {
			return nil, fmt.Errorf("in-toto statement %s: predicate type %q, want %s", l.Digest, st.PredicateType, spdxPredicateType)
		}
		if len(st.Subject) != 1 || st.Subject[0].Digest[subject.Algorithm] != subject.Hex {
			return nil, fmt.Errorf("in-toto statement %s: subject %+v, want the image %s", l.Digest, st.Subject, subject)
		}
		return st.Predicate, nil
	}
	return nil, errors.New("attestation manifest " + att.String() + " has no SPDX in-toto layer")
}
