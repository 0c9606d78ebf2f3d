// Command baseimage builds the manager's base image from nothing, serves it from a registry
// on loopback, and runs a command (ko) with KO_DEFAULTBASEIMAGE pointing at it.
//
//	baseimage [-ca-file FILE] -- ko build ./cmd/manager ...
//
// The base holds only what a static Go binary that talks to Git servers needs: the CA
// certificates (copied from -ca-file), /etc/passwd and /etc/group naming the nonroot user
// 65532, a home directory and /tmp. Its config runs as 65532:65532, so that runAsNonRoot
// holds without a shell, a package manager or a libc. It is built for linux/amd64 and
// linux/arm64 (the files do not depend on the architecture) with every timestamp at the
// epoch, so the same CA file gives the same digest. The registry listens on a fixed
// loopback address because ko records the base's name, port included, in the image
// manifest: a random port would give every build another digest. No network beyond
// loopback is used.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonroot is the user and group the image runs as (distroless uses the same number).
const nonroot = 65532

func main() {
	addr := flag.String("addr", "127.0.0.1:5179", "The loopback address the registry listens on; part of the image's base name annotation.")
	caFile := flag.String("ca-file", "/etc/ssl/certs/ca-certificates.crt", "The PEM bundle of CA certificates to put in the image, for HTTPS Git servers.")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: baseimage [-addr HOST:PORT] [-ca-file FILE] -- COMMAND [ARGS...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	code, err := run(*addr, *caFile, flag.Args())
	if err != nil {
		log.Fatalf("baseimage: %v", err)
	}
	os.Exit(code)
}

func run(addr, caFile string, command []string) (int, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return 0, fmt.Errorf("reading the CA certificates (install ca-certificates or pass -ca-file): %w", err)
	}
	index, err := baseIndex(ca)
	if err != nil {
		return 0, fmt.Errorf("building the base image: %w", err)
	}

	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("serving the base image (is another make dist running? -addr picks another port): %w", err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("baseimage: registry: %v", err)
		}
	}()
	defer srv.Shutdown(context.Background()) //nolint:errcheck // nothing left to do on exit

	// go-containerregistry speaks plain HTTP to 127.0.0.1, and so does ko.
	ref, err := name.ParseReference(lis.Addr().String() + "/immutable-release/static:nonroot")
	if err != nil {
		return 0, err
	}
	if err := remote.WriteIndex(ref, index); err != nil {
		return 0, fmt.Errorf("pushing the base image to the loopback registry: %w", err)
	}
	digest, err := index.Digest()
	if err != nil {
		return 0, err
	}
	base := ref.Context().Digest(digest.String()).String()
	log.Printf("baseimage: serving %s", base)

	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KO_DEFAULTBASEIMAGE="+base)
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), nil
		}
		return 0, err
	}
	return 0, nil
}

// baseIndex is an OCI index of one image per platform, all with the same single layer.
func baseIndex(ca []byte) (v1.ImageIndex, error) {
	layerTar, err := rootfs(ca)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	index := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}} {
		img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
		if err != nil {
			return nil, err
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cfg = cfg.DeepCopy()
		cfg.OS, cfg.Architecture = p.OS, p.Architecture
		cfg.Config = v1.Config{
			User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
			WorkingDir: "/home/nonroot",
			Env: []string{
				"PATH=/usr/local/bin:/usr/bin:/bin",
				"HOME=/home/nonroot",
				"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
			},
		}
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			return nil, err
		}
		index = mutate.AppendManifests(index, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	return index, nil
}

// rootfs is the tar of the base's files, in a fixed order with fixed times.
func rootfs(ca []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0).UTC()
	dir := func(path string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path, Mode: mode, Uid: uid, Gid: uid, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(path string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("etc/", 0o755, 0) },
		func() error {
			return file("etc/passwd", fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot))
		},
		func() error { return file("etc/group", fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", nonroot)) },
		func() error { return dir("etc/ssl/", 0o755, 0) },
		func() error { return dir("etc/ssl/certs/", 0o755, 0) },
		func() error { return file("etc/ssl/certs/ca-certificates.crt", ca) },
		func() error { return dir("home/", 0o755, 0) },
		func() error { return dir("home/nonroot/", 0o700, nonroot) },
		func() error { return dir("tmp/", 0o1777, 0) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
