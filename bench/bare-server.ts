/** The ceiling for this machine: a bare Fastify route doing nothing, measured beside the product. */
import Fastify from "fastify";

const app = Fastify({ logger: false });
app.post("/bare", async (_request, reply) => reply.code(201).send({ bid: { bid_sats: 1 } }));
app.get("/healthz", async () => ({ status: "ok" }));
await app.listen({ host: "127.0.0.1", port: Number(process.env.PORT ?? 0) });
process.on("SIGTERM", () => void app.close().then(() => process.exit(0)));
