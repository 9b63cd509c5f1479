import Fastify, { type FastifyInstance } from 'fastify'
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import type { LookupFunction } from 'node:net'
import { run, type Io } from '../../lib/cli/main.js'
import type { Check } from '../../lib/cli/doctor.js'
import { freePort } from './login.js'

interface Test { teardown (fn: () => unknown): void }

export interface DoctorRun {
  code: number
  out: string
  err: string
  /** With --json: the checks by id (the last of an id wins). */
  checks: Map<string, Check>
  ms: number
}

/** The CLI in-process, output captured; `--json` is added so the checks can be read back. */
export async function runDoctor (argv: string[], extra: Partial<Io> = {}): Promise<DoctorRun> {
  let out = ''
  let err = ''
  const started = Date.now()
  const code = await run(argv, { out: s => { out += s + '\n' }, err: s => { err += s + '\n' }, ...extra })
  const ms = Date.now() - started
  const checks = new Map<string, Check>()
  if (argv.includes('--json') && out !== '') {
    for (const c of (JSON.parse(out) as { checks: Check[] }).checks) checks.set(c.id, c)
  }
  return { code, out, err, checks, ms }
}

/**
 * Name resolution that sends the given made-up names to 127.0.0.1 (so a server on loopback can
 * be reached under a name the https rule does not exempt) and everything else to the resolver.
 */
export function loopbackNames (names: string[]): LookupFunction {
  return ((hostname: string, options: { all?: boolean }, callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void) => {
    if (!names.includes(hostname)) return dnsLookup(hostname, options as never, callback as never)
    if (options.all === true) callback(null, [{ address: '127.0.0.1', family: 4 }])
    else callback(null, '127.0.0.1', 4)
  }) as LookupFunction
}

/** What a small discovery server answers; `null` documents answer 404. */
export interface Shape {
  challenge: string | null
  prmPath: Record<string, unknown> | null
  prmRoot: Record<string, unknown> | null
  metadata: Record<string, unknown> | null
}

export interface Served {
  app: FastifyInstance
  origin: string
  mcp: string
}

/**
 * A hand-built MCP server's discovery surface on loopback, correct by default, which `breakage`
 * edits into the misconfigurations seen in the field. `name` serves it under a made-up host
 * name (pair with loopbackNames), `tls` over https, and `routes` adds routes or hooks.
 */
export async function discoveryServer (t: Test, breakage: (shape: Shape, origin: string) => void = () => {},
  opts: { name?: string, tls?: { cert: Buffer, key: Buffer }, routes?: (app: FastifyInstance) => void } = {}): Promise<Served> {
  const port = await freePort()
  const origin = `${opts.tls === undefined ? 'http' : 'https'}://${opts.name ?? '127.0.0.1'}:${port}`
  const shape: Shape = {
    challenge: `Bearer resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp", scope="mcp:tools"`,
    prmPath: { resource: `${origin}/mcp`, authorization_servers: [origin], scopes_supported: ['mcp:tools'] },
    prmRoot: { resource: `${origin}/mcp`, authorization_servers: [origin], scopes_supported: ['mcp:tools'] },
    metadata: {
      issuer: origin,
      authorization_endpoint: `${origin}/authorize`,
      token_endpoint: `${origin}/token`,
      registration_endpoint: `${origin}/register`,
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      authorization_response_iss_parameter_supported: true
    }
  }
  breakage(shape, origin)
  // The https instance is typed apart; the routes below use nothing that differs.
  const app = (opts.tls === undefined ? Fastify() : Fastify({ https: opts.tls })) as unknown as FastifyInstance
  app.post('/mcp', async (_request, reply) => {
    if (shape.challenge !== null) reply.header('www-authenticate', shape.challenge)
    return reply.code(401).send({ error: 'unauthorized' })
  })
  const serve = (path: string, doc: () => Record<string, unknown> | null) => app.get(path, async (_request, reply) => {
    const body = doc()
    return body === null ? reply.code(404).send({ error: 'not found' }) : body
  })
  serve('/.well-known/oauth-protected-resource/mcp', () => shape.prmPath)
  serve('/.well-known/oauth-protected-resource', () => shape.prmRoot)
  serve('/.well-known/oauth-authorization-server', () => shape.metadata)
  opts.routes?.(app)
  t.teardown(() => app.close())
  await app.listen({ port, host: '127.0.0.1' })
  return { app, origin, mcp: `${origin}/mcp` }
}

/** A bare server on loopback for answers no framework would give (slow, endless, looping). */
export async function rawServer (t: Test, routes: (app: FastifyInstance) => void): Promise<string> {
  const port = await freePort()
  const app = Fastify({ forceCloseConnections: true })
  routes(app)
  t.teardown(() => app.close())
  await app.listen({ port, host: '127.0.0.1' })
  return `http://127.0.0.1:${port}`
}
