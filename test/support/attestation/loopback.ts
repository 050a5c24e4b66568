// What both loopback attestation servers do alike: listen on 127.0.0.1 (port 0), keep
// connections alive past the client's idle timeout (a 1000-host cycle reuses them), count and
// track them so close() need not wait for kept-alive or held ("timeout") ones, and take refused
// TLS handshakes (a foreign or missing certificate: the point of some tests) as no error.
import type { Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export interface Listening {
  readonly port: number;
  /** Connections accepted so far. */
  connections(): number;
  /** Stops listening and drops every connection. */
  close(): Promise<void>;
}

export async function listenOnLoopback(server: Server): Promise<Listening> {
  server.keepAliveTimeout = 30_000;
  const sockets = new Set<Socket>();
  let connections = 0;
  server.on("connection", (s: Socket) => {
    connections++;
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
