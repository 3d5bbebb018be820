# Images of kitex-anyconn from binaries compiled on the host: what `make images` uses,
# with no registry at all (every stage starts FROM scratch). The context is
# bin/image/, which `make images` fills with echo, caller, etcd and
# ca-certificates.crt (static, linux, the host architecture) and an empty data/ folder.
# Keep the final stages alike with Dockerfile, the usual multi-stage build.

FROM scratch AS echo
ARG VERSION=dev
LABEL org.opencontainers.image.title="kitex-anyconn echo" \
      org.opencontainers.image.source="https://github.com/anyconn/kitex-anyconn" \
      org.opencontainers.image.version="${VERSION}"
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY echo /echo
USER 65532:65532
EXPOSE 8888 9090
ENTRYPOINT ["/echo"]

FROM scratch AS caller
ARG VERSION=dev
LABEL org.opencontainers.image.title="kitex-anyconn caller" \
      org.opencontainers.image.source="https://github.com/anyconn/kitex-anyconn" \
      org.opencontainers.image.version="${VERSION}"
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY caller /caller
USER 65532:65532
EXPOSE 7000 9091
ENTRYPOINT ["/caller"]

FROM scratch AS etcd
ARG VERSION=dev
LABEL org.opencontainers.image.title="etcd for kitex-anyconn (go.etcd.io/etcd/server/v3 v3.6.16)" \
      org.opencontainers.image.source="https://github.com/anyconn/kitex-anyconn" \
      org.opencontainers.image.version="${VERSION}"
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY etcd /usr/local/bin/etcd
COPY --chown=65532:65532 data /var/lib/etcd
ENV PATH=/usr/local/bin
VOLUME ["/var/lib/etcd"]
USER 65532:65532
EXPOSE 2379 2380 2381
ENTRYPOINT ["/usr/local/bin/etcd"]
