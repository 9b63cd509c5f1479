import { performance } from 'node:perf_hooks'
import { context, trace, SpanKind, SpanStatusCode, type Attributes, type Span, type Tracer } from '@opentelemetry/api'
import type { Store } from '../storage/types.js'
import type { Provider } from '../providers/types.js'
import { UpstreamError } from '../providers/types.js'

/** The storage contract's operations: the only methods measured (and the only operation label values). */
export const STORE_OPERATIONS = [
  'saveGrant', 'getGrant', 'updateGrantUpstream', 'saveAccessToken', 'getAccessToken', 'deleteAccessToken',
  'saveRefreshToken', 'getRefreshToken', 'rotateRefreshToken', 'revokeGrant', 'listGrants',
  'saveClient', 'getClient', 'deleteClient', 'countClientsFrom',
  'saveFlow', 'takeFlow', 'saveCode', 'consumeCode'
] as const

/** Provider methods and their label values. */
export const PROVIDER_OPERATIONS = {
  authorizationUrl: 'authorization_url',
  exchangeCode: 'exchange_code',
  refresh: 'refresh',
  revoke: 'revoke'
} as const

/** Receives one call per storage operation: its duration and whether it threw. */
export type StorageRecorder = (operation: string, ms: number, ok: boolean) => void
/** Receives one call per provider call: its duration and what it threw, if anything. */
export type ProviderRecorder = (provider: string, operation: string, ms: number, error: unknown) => void

/** The kind of a provider failure, as a bounded label value. */
export function errorKind (err: unknown): string {
  return err instanceof UpstreamError ? err.kind : 'unknown'
}

/** Run `fn` on `self` with `args` as one measured operation (no closure per call on the quiet path). */
type Run = (operation: string, fn: (...args: unknown[]) => unknown, self: unknown, args: unknown[]) => Promise<unknown>

/**
 * A Proxy in front of `target` whose listed methods go through `run`; every other function is bound
 * to the target (class stores keep private fields), every other property passes through. Wrappers
 * are cached per underlying function, so a method replaced on the target later is picked up.
 */
function measured<T extends object> (target: T, operations: ReadonlyMap<string, string>, run: Run): T {
  const cache = new Map<PropertyKey, { original: unknown, wrapper: unknown }>()
  return new Proxy(target, {
    get (obj, prop) {
      const value: unknown = Reflect.get(obj, prop, obj)
      if (typeof value !== 'function') return value
      const hit = cache.get(prop)
      if (hit !== undefined && hit.original === value) return hit.wrapper
      const fn = value as (...args: unknown[]) => unknown
      const operation = typeof prop === 'string' ? operations.get(prop) : undefined
      const wrapper = operation === undefined
        ? fn.bind(obj)
        : (...args: unknown[]) => run(operation, fn, obj, args)
      cache.set(prop, { original: value, wrapper })
      return wrapper
    }
  })
}

/**
 * Run one measured operation: a span (made current while it runs, so that client spans of a Redis
 * or HTTP instrumentation nest under it) and a recorder call with the duration and the outcome.
 * The arguments (hashes, keys, tokens) are never looked at.
 */
function runner (
  tracer: Tracer | undefined,
  spanName: (operation: string) => string,
  attributes: (operation: string) => Attributes,
  record: ((operation: string, ms: number, error: unknown, failed: boolean) => void) | undefined,
  failureAttributes: (err: unknown) => Attributes
): Run {
  const measure = async (operation: string, fn: () => unknown, span: Span | undefined): Promise<unknown> => {
    const start = record === undefined ? 0 : performance.now()
    try {
      const result = span !== undefined && span.isRecording()
        ? await context.with(trace.setSpan(context.active(), span), fn)
        : await fn()
      record?.(operation, performance.now() - start, undefined, false)
      return result
    } catch (err) {
      record?.(operation, performance.now() - start, err, true)
      if (span !== undefined) {
        span.setAttributes(failureAttributes(err))
        span.setStatus({ code: SpanStatusCode.ERROR })
      }
      throw err
    } finally {
      span?.end()
    }
  }
  return (operation, fn, self, args) => {
    // A span only under a recording parent (a flow step, an HTTP span): never a trace of its own.
    const span = tracer !== undefined && trace.getActiveSpan()?.isRecording() === true
      ? tracer.startSpan(spanName(operation), { kind: SpanKind.INTERNAL, attributes: attributes(operation) })
      : undefined
    // Nothing to record and nobody listening (no SDK, no parent, not sampled): no extra promise, no timing.
    if (record === undefined && (span === undefined || !span.isRecording())) {
      span?.end()
      try {
        return fn.apply(self, args) as Promise<unknown>
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return measure(operation, () => fn.apply(self, args), span)
  }
}

function errorType (err: unknown): string {
  return err instanceof Error ? err.name : typeof err
}

/** The store, with a span and a measurement around every contract operation. */
export function instrumentStore (store: Store, tracer: Tracer | undefined, record: StorageRecorder | undefined): Store {
  const backend = store.constructor?.name ?? 'custom'
  const operations = new Map<string, string>(STORE_OPERATIONS.map(op => [op, op]))
  const attrs = new Map<string, Attributes>(STORE_OPERATIONS.map(op => [op, {
    'mcp_oauth.storage.operation': op,
    'mcp_oauth.storage.backend': backend
  }]))
  const names = new Map<string, string>(STORE_OPERATIONS.map(op => [op, `storage.${op}`]))
  const run = runner(
    tracer,
    op => names.get(op) as string,
    op => attrs.get(op) as Attributes,
    record === undefined ? undefined : (op, ms, _err, failed) => record(op, ms, !failed),
    err => ({ 'error.type': errorType(err) })
  )
  return measured(store, operations, run)
}

/** The provider, with a span and a measurement around every call to the identity provider. */
export function instrumentProvider (provider: Provider, tracer: Tracer | undefined, record: ProviderRecorder | undefined): Provider {
  const name = provider.name
  const operations = new Map<string, string>(Object.entries(PROVIDER_OPERATIONS))
  const run = runner(
    tracer,
    op => `provider.${op}`,
    op => ({ 'mcp_oauth.provider.name': name, 'mcp_oauth.provider.operation': op }),
    record === undefined ? undefined : (op, ms, err, failed) => record(name, op, ms, failed ? (err ?? new Error('failed')) : undefined),
    err => ({ 'error.type': errorType(err), 'mcp_oauth.provider.error_kind': errorKind(err) })
  )
  return measured(provider, operations, run)
}
