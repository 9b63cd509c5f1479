import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import { errors } from './errors.js'
import type { TokenValidator } from './core/validator.js'
import type { ResolvedConfig, ResolvedResource } from './options.js'
import type { LimiterHolder } from './routes/oauth.js'

export interface AuthenticateOptions {
  /** Every one of these scopes must be granted to the token. */
  scopes?: string[]
  /** The resource this route belongs to; needed only when several resources are declared. */
  resource?: string
}

/** RFC 6750 §2.1: b64token, case-insensitive scheme, one or more spaces. */
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i
const SCHEME_ONLY = /^bearer *$/i

function quote (value: string): string {
  return '"' + value.replace(/["\\]/g, '\\$&') + '"'
}

/**
 * Build `authenticate(opts)`: an onRequest hook that lets a request through only with a valid
 * access token for this resource that carries the required scopes, and answers otherwise with the
 * RFC 6750 / RFC 9728 challenge MCP clients use to discover the authorization server.
 */
export function createAuthenticate (config: ResolvedConfig, validator: TokenValidator, limiter: LimiterHolder = {}) {
  return function authenticate (opts: AuthenticateOptions = {}): onRequestHookHandler {
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

    /** Run the rate limiter (callers check that there is one: no await when there is not); true when it answered 429. */
    const limited = async (request: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
      const perUser = limiter.perUser
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

    return async function mcpOAuthGuard (request: FastifyRequest, reply: FastifyReply) {
      const query = request.query as Record<string, unknown> | undefined
      if (query !== undefined && query !== null && Object.hasOwn(query, 'access_token')) {
        const d = 'Access tokens are accepted only in the Authorization header, never in the URL'
        return fail(reply, 400, challenge('invalid_request', d), { error: 'invalid_request', error_description: d })
      }
      const header = request.headers.authorization
      // The usual request (a well-formed Bearer header) needs one regex; the others find out why not.
      const match = header === undefined ? null : BEARER.exec(header)
      if (match === null) {
        if (header === undefined || header === '' || !/^bearer(?: |$)/i.test(header)) {
          // No credentials, or another scheme: RFC 6750 §3.1 says no error code.
          return fail(reply, 401, noToken, { error_description: 'This resource requires an OAuth access token (Authorization: Bearer)' })
        }
        const d = SCHEME_ONLY.test(header) ? 'The Bearer scheme was sent without a token' : 'Malformed Bearer token'
        return fail(reply, 400, challenge('invalid_request', d), { error: 'invalid_request', error_description: d })
      }
      let result
      try {
        result = await validator.validate(match[1] as string, resource.resource)
      } catch (err) {
        request.log.error({ err }, 'access token validation failed')
        return reply.code(503).header('retry-after', '1').header('cache-control', 'no-store')
          .send({ error: 'temporarily_unavailable', error_description: 'Token storage is unavailable; retry shortly' })
      }
      if (!result.valid) {
        // Guessing tokens costs the guesser: failed tokens count against the address's budget.
        if (limiter.perUser !== undefined && await limited(request, reply)) return reply
        return fail(reply, 401, challenge('invalid_token', result.description), { error: 'invalid_token', error_description: result.description })
      }
      const granted = result.auth.scopes
      for (const scope of required) {
        if (!granted.includes(scope)) {
          const missing = required.filter(s => !granted.includes(s))
          const d = `The access token lacks the scope ${missing.join(' ')}`
          return fail(reply, 403, challenge('insufficient_scope', d, required.join(' ')), { error: 'insufficient_scope', error_description: d })
        }
      }
      request.mcpAuth = result.auth
      // Per-user budget, after the guard: keyed by who the token says, not by IP.
      if (limiter.perUser !== undefined && await limited(request, reply)) return reply
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
