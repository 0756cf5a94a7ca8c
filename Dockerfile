# syntax=docker/dockerfile:1
# One image, two static binaries: /loop-store and /loop-token-operator (the Helm chart sets the
# command of each Deployment). Multi-stage: build on Alpine (musl, so the binaries are fully
# static), run on distroless/static as the non-root user 65532, with nothing else in the image.
#
#   docker build -t loop-token-operator:dev .
#
# Note: this repository's CI machines have no container engine; the image build is not part of
# `make test`.

FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
RUN cargo build --release --locked --bin loop-store --bin loop-token-operator \
 && strip target/release/loop-store target/release/loop-token-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/loop-store /loop-store
COPY --from=build /src/target/release/loop-token-operator /loop-token-operator
USER 65532:65532
ENTRYPOINT []
CMD ["/loop-token-operator", "--help"]
