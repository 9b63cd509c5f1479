import { context, trace, ProxyTracerProvider, SpanKind, SpanStatusCode, type Attributes, type Context, type Tracer } from '@opentelemetry/api'
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteHandlerMethod, RouteOptions } from 'fastify'
import type { AuditEventName, AuditEvents } from '../security/audit.js'
import { JWT_BEARER_GRANT } from '../oauth/jwt.js'
import type { ResolvedTracingOptions } from './options.js'

export const TRACER_NAME = 'fastify-mcp-oauth'

/** Flow steps that get a span: `METHOD path-below-the-issuer` -> span name. */
const STEPS: Readonly<Record<string, string>> = {
  'GET /oauth/authorize': 'oauth.authorize',
  'POST /oauth/consent': 'oauth.consent',
  'GET /oauth/callback': 'oauth.callback',
  'POST /oauth/token': 'oauth.token',
  'POST /oauth/revoke': 'oauth.revoke',
  'POST /oauth/introspect': 'oauth.introspect',
  'POST /oauth/register': 'oauth.register',
  'GET /oauth/register/:clientId': 'oauth.client_read',
  'PUT /oauth/register/:clientId': 'oauth.client_update',
  'DELETE /oauth/register/:clientId': 'oauth.client_delete'
}

/** The token endpoint's span says which grant it served. */
const TOKEN_STEPS: Readonly<Record<string, string>> = {
  authorization_code: 'oauth.token_exchange',
  refresh_token: 'oauth.refresh',
  client_credentials: 'oauth.client_credentials',
  [JWT_BEARER_GRANT]: 'oauth.jwt_bearer'
}

/**
 * Audit fields that may go on a span, renamed; anything else (grant ids, settings) stays off.
 * Client ids are public identifiers (they travel in URLs); user ids are hashed as in the audit log.
 */
const EVENT_ATTRIBUTES: Readonly<Record<string, string>> = {
  clientId: 'oauth.client_id',
  outcome: 'oauth.outcome',
  tokenType: 'oauth.token_type',
  grantType: 'oauth.grant_type',
  subjectType: 'oauth.subject_type',
  source: 'oauth.client_source',
  provider: 'mcp_oauth.provider.name',
  kind: 'mcp_oauth.provider.error_kind',
  step: 'mcp_oauth.provider.step'
}

interface OtelRequest { opentelemetry?: () => { context?: Context } | undefined }

/**
 * Spans of the plugin: one per flow step (wrapping the route handler, so that the storage and
 * provider spans of that step are its children; it ends when the response closes), with audit
 * events recorded on the current span.
 * Everything goes through the OpenTelemetry API, which does nothing until an SDK is registered.
 */
export class Tracing {
  readonly tracer: Tracer
  /** The API's proxy provider, until an SDK is found behind it. */
  #proxy: ProxyTracerProvider | undefined

  readonly #pseudonym: (userId: string) => string

  constructor (options: ResolvedTracingOptions, pseudonym: (userId: string) => string) {
    this.#pseudonym = pseudonym
    const provider = options.tracerProvider ?? trace.getTracerProvider()
    this.tracer = provider.getTracer(TRACER_NAME)
    this.#proxy = provider instanceof ProxyTracerProvider ? provider : undefined
  }

  /**
   * False while the tracer is the API's proxy with no SDK registered behind it: every span would
   * be a non-recording one, so the per-request work is skipped. An SDK registered later (after
   * the plugin) is picked up on the next request, and from then on this is a field read.
   */
  get live (): boolean {
    if (this.#proxy === undefined) return true
    if (this.#proxy.getDelegateTracer(TRACER_NAME) === undefined) return false
    this.#proxy = undefined
    return true
  }

  /** Wrap the handler of a flow-step route of the OAuth scope in its span. */
  wrapRoute (route: RouteOptions, basePath: string): void {
    if (typeof route.method !== 'string' || !route.url.startsWith(basePath)) return
    const step = STEPS[`${route.method} ${route.url.slice(basePath.length)}`]
    if (step === undefined) return
    const handler = route.handler as (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) => unknown
    const tracer = this.tracer
    const baseAttributes: Attributes = { 'http.route': route.url, 'http.request.method': route.method }
    const tracing = this
    const wrapped = function (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) {
      if (!tracing.live) return handler.call(this, request, reply)
      let name = step
      const attributes = { ...baseAttributes }
      if (step === 'oauth.token') {
        const grantType = (request.body as Record<string, unknown> | undefined)?.grant_type
        if (typeof grantType === 'string' && TOKEN_STEPS[grantType] !== undefined) {
          name = TOKEN_STEPS[grantType]
          attributes['oauth.grant_type'] = grantType
        }
      }
      // Under @fastify/otel's request span when it is registered; else under whatever is current.
      const parent = (request as unknown as OtelRequest).opentelemetry?.()?.context ?? context.active()
      const span = tracer.startSpan(name, { kind: SpanKind.INTERNAL, attributes }, parent)
      if (!span.isRecording()) return handler.call(this, request, reply)
      // The response's close event comes in every case, a client that went away included (when
      // Fastify's onResponse does not run).
      reply.raw.once('close', () => {
        span.setAttribute('http.response.status_code', reply.statusCode)
        if (!reply.raw.writableFinished) span.setAttribute('mcp_oauth.aborted', true)
        if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
        span.end()
      })
      return context.with(trace.setSpan(parent, span), async () => {
        try {
          return await handler.call(this, request, reply)
        } catch (err) {
          const code = (err as { error?: unknown } | null)?.error
          span.setAttribute('oauth.error', typeof code === 'string' ? code : 'server_error')
          throw err
        }
      })
    }
    route.handler = wrapped as RouteHandlerMethod
  }

  /** Audit events become events of the current span, with their non-secret fields only. */
  onAudit = <E extends AuditEventName>(event: E, fields: AuditEvents[E]): void => {
    const span = trace.getActiveSpan()
    if (span === undefined || !span.isRecording()) return
    const attributes: Attributes = {}
    for (const [key, value] of Object.entries(fields)) {
      if (typeof value !== 'string') continue
      if (key === 'userId') attributes['enduser.pseudo.id'] = this.#pseudonym(value)
      const name = EVENT_ATTRIBUTES[key]
      if (name !== undefined) attributes[name] = value
    }
    if (typeof attributes['oauth.client_id'] === 'string') span.setAttribute('oauth.client_id', attributes['oauth.client_id'])
    span.addEvent(`audit.${event}`, attributes)
  }
}
