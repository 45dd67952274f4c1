package imagebuild

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The SBOM of each image is an SPDX 2.3 JSON document made from the Go build info of the image's own
// binary (debug/buildinfo): the main module, every module linked in with its version and go.sum hash,
// replacements, the Go version and the build settings. It holds nothing that changes between two
// builds of the same inputs: its time is the image's created time and its namespace is derived from the
// binary's SHA-256.
const (
	spdxVersion   = "SPDX-2.3"
	noAssertion   = "NOASSERTION"
	spdxCreator   = "Tool: github.com/numaflow-connectors/sources/common/imagebuild"
	spdxDocID     = "SPDXRef-DOCUMENT"
	spdxMainID    = "SPDXRef-Package-main"
	spdxStdlibID  = "SPDXRef-Package-stdlib"
	spdxModPrefix = "SPDXRef-Package-module-"
)

// spdxDocument is the subset of an SPDX 2.3 document (JSON serialisation) that the SBOM fills.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
	Comment  string   `json:"comment,omitempty"`
}

type spdxPackage struct {
	Name                  string            `json:"name"`
	SPDXID                string            `json:"SPDXID"`
	VersionInfo           string            `json:"versionInfo,omitempty"`
	PackageFileName       string            `json:"packageFileName,omitempty"`
	DownloadLocation      string            `json:"downloadLocation"`
	FilesAnalyzed         bool              `json:"filesAnalyzed"`
	Checksums             []spdxChecksum    `json:"checksums,omitempty"`
	LicenseConcluded      string            `json:"licenseConcluded"`
	LicenseDeclared       string            `json:"licenseDeclared"`
	CopyrightText         string            `json:"copyrightText"`
	Comment               string            `json:"comment,omitempty"`
	ExternalRefs          []spdxExternalRef `json:"externalRefs,omitempty"`
	PrimaryPackagePurpose string            `json:"primaryPackagePurpose,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
	Comment string `json:"comment,omitempty"`
}

// readBuildInfo returns the Go build info embedded in bin, the contents of the binary at path: the
// bytes that go into the image, so the SBOM is about exactly them.
func readBuildInfo(path string, bin []byte) (*debug.BuildInfo, error) {
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return nil, fmt.Errorf("reading Go build info of %s: %w", path, err)
	}
	if bi.Main.Path == "" {
		return nil, fmt.Errorf("reading Go build info of %s: no main module (built with GO111MODULE=off?)", path)
	}
	return bi, nil
}

// sbom returns the SPDX document, as JSON, of the binary bin (whose build info is bi) installed
// in cfg's image for platform plat.
func sbom(cfg *Config, plat v1.Platform, bin []byte, bi *debug.BuildInfo) ([]byte, error) {
	binSum := sha256.Sum256(bin)
	binHex := hex.EncodeToString(binSum[:])
	platName := plat.String()

	app := spdxPackage{
		Name:            bi.Main.Path,
		SPDXID:          spdxMainID,
		VersionInfo:     cfg.Version,
		PackageFileName: Entrypoint(cfg.Name),
		// The repository at the revision the binary was built from (cfg.check requires both).
		DownloadLocation: "git+" + cfg.Source + "@" + cfg.Revision,
		Checksums:        []spdxChecksum{{Algorithm: "SHA256", ChecksumValue: binHex}},
		LicenseConcluded: noAssertion,
		LicenseDeclared:  cfg.Licenses,
		CopyrightText:    noAssertion,
		Comment: fmt.Sprintf("%s %s for %s, revision %s; Go build info: %s; build settings: %s",
			cfg.Name, cfg.Version, platName, cfg.Revision, bi.GoVersion, buildSettings(bi)),
		ExternalRefs:          []spdxExternalRef{purlRef(bi.Main.Path, cfg.Version)},
		PrimaryPackagePurpose: "APPLICATION",
	}
	stdlib := spdxPackage{
		Name:                  "stdlib",
		SPDXID:                spdxStdlibID,
		VersionInfo:           bi.GoVersion,
		DownloadLocation:      noAssertion,
		LicenseConcluded:      noAssertion,
		LicenseDeclared:       noAssertion,
		CopyrightText:         noAssertion,
		Comment:               "the Go standard library and runtime linked into the binary",
		ExternalRefs:          []spdxExternalRef{purlRef("stdlib", strings.TrimPrefix(bi.GoVersion, "go"))},
		PrimaryPackagePurpose: "LIBRARY",
	}
	doc := spdxDocument{
		SPDXVersion: spdxVersion,
		DataLicense: "CC0-1.0",
		SPDXID:      spdxDocID,
		Name:        fmt.Sprintf("%s-%s-%s", cfg.Name, cfg.Version, strings.ReplaceAll(platName, "/", "-")),
		// Unique per binary, stable across rebuilds of the same inputs.
		DocumentNamespace: fmt.Sprintf("%s/spdx/%s/%s/%s/sha256-%s", strings.TrimSuffix(cfg.Source, "/"),
			cfg.Name, cfg.Version, platName, binHex),
		CreationInfo: spdxCreationInfo{
			Created:  cfg.created().Format(time.RFC3339),
			Creators: []string{spdxCreator},
			Comment:  "generated from the Go build info of " + Entrypoint(cfg.Name) + " at image build time",
		},
		Packages: []spdxPackage{app, stdlib},
		Relationships: []spdxRelationship{
			{Element: spdxDocID, Type: "DESCRIBES", Related: spdxMainID},
			{Element: spdxMainID, Type: "DEPENDS_ON", Related: spdxStdlibID},
		},
	}
	ids := map[string]bool{}
	for _, d := range bi.Deps {
		p := modulePackage(d)
		p.SPDXID = uniqueID(ids, spdxModPrefix+idSafe(d.Path))
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, spdxRelationship{Element: spdxMainID, Type: "DEPENDS_ON", Related: p.SPDXID})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding SBOM of %s for %s: %w", cfg.Name, platName, err)
	}
	return b, nil
}

// modulePackage describes the module d linked into a binary. A replaced module keeps its own path as
// the package name (that is what it is known and scanned by) and takes the replacement's version and
// hash, which is the code actually built; a replacement by a local directory has no version (the
// toolchain's "(devel)"), hash or package URL.
func modulePackage(d *debug.Module) spdxPackage {
	p := spdxPackage{
		Name:                  d.Path,
		DownloadLocation:      noAssertion,
		LicenseConcluded:      noAssertion,
		LicenseDeclared:       noAssertion,
		CopyrightText:         noAssertion,
		PrimaryPackagePurpose: "LIBRARY",
	}
	version, sum := d.Version, d.Sum
	local := false
	if r := d.Replace; r != nil {
		version, sum = r.Version, r.Sum
		// The toolchain records a directory replacement's version as "(devel)": the code is whatever
		// that directory held at the image's revision.
		local = r.Version == "" || r.Version == "(devel)"
		if local {
			version = "(devel)"
			p.Comment = fmt.Sprintf("Go module %s %s, replaced by the local directory %s", d.Path, d.Version, r.Path)
		} else {
			p.Comment = fmt.Sprintf("Go module %s %s, replaced by %s %s", d.Path, d.Version, r.Path, r.Version)
		}
	} else {
		p.Comment = "Go module"
	}
	p.VersionInfo = version
	if !local && version != "" {
		p.ExternalRefs = []spdxExternalRef{purlRef(d.Path, version)}
	}
	if sum != "" {
		p.Comment += "; go.sum " + sum
		if hexSum, ok := h1Hex(sum); ok {
			// The h1: hash is a SHA-256 (over the module's file list and file hashes), which is the
			// closest SPDX has to a checksum of a Go module.
			p.Checksums = []spdxChecksum{{Algorithm: "SHA256", ChecksumValue: hexSum}}
		}
	}
	return p
}

// h1Hex returns the hexadecimal SHA-256 of a go.sum "h1:" hash.
func h1Hex(sum string) (string, bool) {
	b64, ok := strings.CutPrefix(sum, "h1:")
	if !ok {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != sha256.Size {
		return "", false
	}
	return hex.EncodeToString(raw), true
}

// buildSettings renders the build settings of bi (-trimpath, CGO_ENABLED, GOOS, GOARCH, vcs.* ...) in
// the order the Go toolchain recorded them.
func buildSettings(bi *debug.BuildInfo) string {
	s := make([]string, 0, len(bi.Settings))
	for _, kv := range bi.Settings {
		s = append(s, kv.Key+"="+kv.Value)
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

// purlRef is the package URL of Go module path at version: pkg:golang/<path>@<version>, each path
// segment and the version percent-encoded.
func purlRef(path, version string) spdxExternalRef {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = purlEscape(s)
	}
	loc := "pkg:golang/" + strings.Join(segs, "/")
	if version != "" {
		loc += "@" + purlEscape(version)
	}
	return spdxExternalRef{ReferenceCategory: "PACKAGE-MANAGER", ReferenceType: "purl", ReferenceLocator: loc}
}

// purlEscape percent-encodes everything but unreserved characters (so "+incompatible" becomes %2B).
func purlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

var notIDChar = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// idSafe turns s into characters an SPDX identifier allows.
func idSafe(s string) string { return notIDChar.ReplaceAllString(s, "-") }

// uniqueID returns id, or id with a counter appended when a previous call returned it already.
func uniqueID(seen map[string]bool, id string) string {
	out := id
	for n := 2; seen[out]; n++ {
		out = id + "-" + strconv.Itoa(n)
	}
	seen[out] = true
	return out
}
