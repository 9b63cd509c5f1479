import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify'
import { errors } from './errors.js'
import { TOKEN_PREFIX } from './oauth/tokens.js'
import type { TokenValidator, ValidationResult } from './token/validator.js'
import type { ResolvedConfig, ResolvedResource } from './options/index.js'

export interface AuthenticateOptions {
  /** Every one of these scopes must be granted to the token. */
  scopes?: string[]
  /** The resource this route belongs to; needed only when several resources are declared. */
  resource?: string
}

/** RFC 6750 §2.1: b64token, case-insensitive scheme, one or more spaces. */
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i
/** The usual header: Bearer and a token of the shape this server issues (checked once, here). */
const OURS = new RegExp(`^[Bb][Ee][Aa][Rr][Ee][Rr] +(${TOKEN_PREFIX.accessToken}[A-Za-z0-9_-]{43}) *$`)
const SCHEME_ONLY = /^bearer *$/i

function quote (value: string): string {
  return '"' + value.replace(/["\\]/g, '\\$&') + '"'
}

/** The per-user rate limiter of guarded routes: rejects with a 429 error once the caller's budget is spent. */
export type GuardLimiter = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>

/**
 * Build `authenticate(opts)`: an onRequest hook that lets a request through only with a valid
 * access token for this resource that carries the required scopes, and answers otherwise with the
 * RFC 6750 / RFC 9728 challenge MCP clients use to discover the authorization server. `limiter`
 * gives the per-user limiter, which the OAuth scope builds once it is registered: it is asked when a
 * hook is made (the application's routes, after the plugin). Without one (rate limiting off) no
 * request is counted.
 */
export function createAuthenticate (config: ResolvedConfig, validator: TokenValidator, limiter: () => GuardLimiter | undefined = () => undefined) {
  return function authenticate (opts: AuthenticateOptions = {}): onRequestHookHandler {
    const perUser = limiter()
    const resource = pickResource(config, opts.resource)
    const required = opts.scopes ?? []
    for (const scope of required) {
      if (!config.scopes.includes(scope)) {
        throw new errors.INVALID_GUARD(`scope "${scope}" is not one of the configured scopes (${config.scopes.join(' ')})`)
      }
    }
    const challengeScope = (required.length > 0 ? required : resource.scopes).join(' ')
    const tail = `resource_metadata=${quote(resource.metadataUrl)}, scope=${quote(challengeScope)}`
    const noToken = `Bearer ${tail}`
    const challenge = (error: string, description: string, scope = challengeScope) =>
      `Bearer error=${quote(error)}, error_description=${quote(description)}, ` +
      `resource_metadata=${quote(resource.metadataUrl)}, scope=${quote(scope)}`

    const fail = (reply: FastifyReply, status: number, header: string, body: Record<string, string>) => {
      return reply.code(status)
        .header('www-authenticate', header)
        .header('cache-control', 'no-store')
        .send(body)
    }

    /** Run the rate limiter (callers check that there is one: no promise when there is not); true when it answered 429. */
    const limited = async (request: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
      if (perUser === undefined) return false
      try {
        await perUser(request, reply)
        return false
      } catch (err) {
        const e = err as { statusCode?: number, message?: string }
        if (e.statusCode !== 429) throw err
        reply.code(429).header('cache-control', 'no-store')
          .send({ error: 'temporarily_unavailable', error_description: e.message ?? 'Too many requests' })
        return true
      }
    }

    const unavailable = (request: FastifyRequest, reply: FastifyReply, err: unknown): void => {
      request.log.error({ err }, 'access token validation failed')
      reply.code(503).header('retry-after', '1').header('cache-control', 'no-store')
        .send({ error: 'temporarily_unavailable', error_description: 'Token storage is unavailable; retry shortly' })
    }

    /** Answer a token that is not valid here (401) or lacks a scope (403); else set `request.mcpAuth`. True: go on. */
    const admit = (request: FastifyRequest, reply: FastifyReply, result: ValidationResult): boolean => {
      if (!result.valid) {
        fail(reply, 401, challenge('invalid_token', result.description), { error: 'invalid_token', error_description: result.description })
        return false
      }
      const granted = result.auth.scopes
      for (const scope of required) {
        if (!granted.includes(scope)) {
          const missing = required.filter(s => !granted.includes(s))
          const d = `The access token lacks the scope ${missing.join(' ')}`
          fail(reply, 403, challenge('insufficient_scope', d, required.join(' ')), { error: 'insufficient_scope', error_description: d })
          return false
        }
      }
      request.mcpAuth = result.auth
      return true
    }

    /** The path with a promise: a store that does I/O, or a rate limiter. True: go on. */
    const settle = async (request: FastifyRequest, reply: FastifyReply, token: string, known: ValidationResult | undefined): Promise<boolean> => {
      let result = known
      if (result === undefined) {
        try {
          result = await validator.lookup(token, resource.resource)
        } catch (err) {
          unavailable(request, reply, err)
          return false
        }
      }
      // Guessing tokens costs the guesser: failed tokens count against the address's budget.
      const limits = perUser !== undefined
      if (limits && !result.valid && await limited(request, reply)) return false
      if (!admit(request, reply, result)) return false
      // Per-user budget, after the guard: keyed by who the token says, not by IP.
      return !(limits && await limited(request, reply))
    }

    // Callback style: with a store that answers in process and no rate limiter, a request passes
    // without a single promise; otherwise `settle` takes over.
    return function mcpOAuthGuard (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
      const query = request.query as Record<string, unknown> | undefined
      if (query !== undefined && query !== null && Object.hasOwn(query, 'access_token')) {
        const d = 'Access tokens are accepted only in the Authorization header, never in the URL'
        fail(reply, 400, challenge('invalid_request', d), { error: 'invalid_request', error_description: d })
        return
      }
      const header = request.headers.authorization
      // The usual request (one of our tokens, well-formed) needs one regex; the others find out why not.
      const ours = header === undefined ? null : OURS.exec(header)
      const match = ours ?? (header === undefined ? null : BEARER.exec(header))
      if (match === null) {
        if (header === undefined || header === '' || !/^bearer(?: |$)/i.test(header)) {
          // No credentials, or another scheme: RFC 6750 §3.1 says no error code.
          fail(reply, 401, noToken, { error_description: 'This resource requires an OAuth access token (Authorization: Bearer)' })
          return
        }
        const d = SCHEME_ONLY.test(header) ? 'The Bearer scheme was sent without a token' : 'Malformed Bearer token'
        fail(reply, 400, challenge('invalid_request', d), { error: 'invalid_request', error_description: d })
        return
      }
      const token = match[1] as string
      let result: ValidationResult | undefined
      try {
        result = ours !== null ? validator.validateShapedNow(token, resource.resource) : validator.validateNow(token, resource.resource)
      } catch (err) {
        unavailable(request, reply, err)
        return
      }
      if (result !== undefined && perUser === undefined) {
        if (admit(request, reply, result)) done()
        return
      }
      settle(request, reply, token, result).then(go => { if (go) done() }, done)
    }
  }
}

function pickResource (config: ResolvedConfig, wanted: string | undefined): ResolvedResource {
  if (wanted === undefined) {
    if (config.resources.length === 1) return config.resources[0] as ResolvedResource
    throw new errors.INVALID_GUARD('several resources are configured: pass { resource } to say which one this route serves')
  }
  let canonical: string
  try {
    canonical = new URL(wanted).href
  } catch {
    throw new errors.INVALID_GUARD(`"${wanted}" is not a URL`)
  }
  const found = config.resources.find(r => r.resource === canonical)
  if (found === undefined) throw new errors.INVALID_GUARD(`"${wanted}" is not one of the configured resources`)
  return found
}
