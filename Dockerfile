# The slurm-vk provider image (the chart's image.repository).
#   docker build -t ghcr.io/slurmkube/slurm-vk:0.1.0 .
# A static binary on distroless: no shell, no package manager, user 65532.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} \
    go build -trimpath -ldflags='-s -w' -o /out/slurm-vk ./cmd/slurm-vk

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/slurm-vk /usr/local/bin/slurm-vk
USER 65532:65532
# 10250: kubelet API (logs); 9090: /metrics and /healthz.
EXPOSE 10250 9090
ENTRYPOINT ["/usr/local/bin/slurm-vk"]
