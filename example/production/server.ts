import { buildProduction } from './app.js'

// Plain entry point (no Fastify CLI): build, listen, and close cleanly on SIGTERM.
const app = await buildProduction()
await app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '0.0.0.0' })
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
}
