// Starts the fauxqs SQS emulator for tests, listening on 127.0.0.1 only.
//
// fauxqs 1.9.2 always listens on 0.0.0.0. Tests here must never listen beyond loopback, so this
// launcher rewrites that address in net.Server.prototype.listen before fauxqs is imported.
// Port: FAUXQS_PORT (default 4566). Request logging: FAUXQS_LOGGER=true (default off).
import net from "node:net";

const LOOPBACK = "127.0.0.1";
const originalListen = net.Server.prototype.listen;

function loopbackOnly(host) {
  return host === undefined || host === "0.0.0.0" || host === "::" ? LOOPBACK : host;
}

net.Server.prototype.listen = function listen(...args) {
  if (args.length > 0 && args[0] !== null && typeof args[0] === "object" && !(args[0] instanceof net.Server)) {
    const opts = { ...args[0] };
    if (opts.path === undefined && opts.fd === undefined && opts.handle === undefined) {
      opts.host = loopbackOnly(opts.host);
    }
    args[0] = opts;
  } else if (typeof args[0] === "number" || typeof args[0] === "string" && /^\d+$/.test(args[0])) {
    if (typeof args[1] === "string") {
      args[1] = loopbackOnly(args[1]);
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  }
  return originalListen.apply(this, args);
};

if (process.env.FAUXQS_LOGGER === undefined) {
  process.env.FAUXQS_LOGGER = "false";
}

const { startFauxqs } = await import("fauxqs");
const server = await startFauxqs({});
console.log(`fauxqs listening on http://${LOOPBACK}:${server.port}`);

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, async () => {
    if (stopping) return;
    stopping = true;
    await server.stop();
    process.exit(0);
  });
}
