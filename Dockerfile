# syntax=docker/dockerfile:1
# One image, two static binaries on PATH: /loop-store and /loop-token-operator (the Helm chart
# runs them by these paths), and the CA certificates, FROM scratch, as the non-root user 65532.
# Nothing else is in the image: no shell, no libc (the binaries link glibc statically).
#
# Two ways to build it from this one file:
#   docker build -t loop-token-operator:dev .
#       the `build` stage compiles the binaries in the official Rust image;
#   make image   (scripts/image; podman or buildah, nothing pulled)
#       compiles them on this machine and hands them in as the `build` stage with
#       `--build-context build=DIR`, DIR holding out/loop-store, out/loop-token-operator and
#       out/ca-certificates.crt: the Rust image is never used.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY benches benches
# crt-static: glibc linked into each binary. --target keeps the flag off build scripts and
# proc macros. glibc >= 2.34 carries its `files` and `dns` resolvers itself, so names resolve
# without NSS modules in the image.
RUN triple="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$triple" --bin loop-store --bin loop-token-operator \
 && mkdir -p /out \
 && cp "target/$triple/release/loop-store" "target/$triple/release/loop-token-operator" /out/ \
 && cp /etc/ssl/certs/ca-certificates.crt /out/

FROM scratch
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/loop-store /out/loop-token-operator /
ENV PATH=/
USER 65532:65532
CMD ["loop-token-operator", "--help"]
