/**
 * A load balancer as small as one can be: a TCP proxy on loopback handing each new connection
 * to the next backend in turn, passing over one that refuses. It knows nothing of HTTP or
 * websockets and keeps no stickiness, which is the point: the replicas must serve whoever comes.
 * A backend that dies takes its connections with it; clients reconnect and land elsewhere.
 */
import net from "node:net";

export interface Balancer {
  url: string;
  /** host:port of each backend, changed by the test as replicas come and go. */
  backends: string[];
  close(): Promise<void>;
}

export async function startBalancer(backends: string[]): Promise<Balancer> {
  let next = 0;
  const sockets = new Set<net.Socket>();
  const connectTo = (client: net.Socket, tries: number) => {
    const list = balancer.backends;
    if (tries >= list.length || list.length === 0) {
      client.destroy();
      return;
    }
    const target = list[next++ % list.length] as string;
    const [host, port] = target.split(":") as [string, string];
    const upstream = net.connect({ host, port: Number(port) });
    let connected = false;
    upstream.once("connect", () => {
      connected = true;
      sockets.add(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on("error", () => undefined);
    upstream.once("close", () => {
      sockets.delete(upstream);
      // Refused before it connected: the next backend may take it.
      if (!connected && !client.destroyed) connectTo(client, tries + 1);
      else client.destroy();
    });
    client.once("close", () => upstream.destroy());
  };
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    sockets.add(client);
    client.once("close", () => sockets.delete(client));
    client.on("error", () => undefined);
    connectTo(client, 0);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address() as net.AddressInfo;
  const balancer: Balancer = {
    url: `http://127.0.0.1:${address.port}`,
    backends,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return balancer;
}
