# gatehouse: one static-ish binary on a distroless base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gatehouse

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
USER nonroot
EXPOSE 9191 8080 9090
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]
