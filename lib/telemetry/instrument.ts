import { performance } from 'node:perf_hooks'
import { context, trace, SpanKind, SpanStatusCode, type Attributes, type Span, type Tracer } from '@opentelemetry/api'
import type { Store } from '../storage/contract.js'
import { STORE_METHODS } from '../storage/contract.js'
import type { Provider } from '../providers/types.js'
import { UpstreamError } from '../errors.js'
import { errors } from '../errors.js'

/** The storage contract's methods: the only ones measured (and the only operation label values). */
export const STORE_OPERATIONS = STORE_METHODS

/** Provider methods and their label values. */
export const PROVIDER_OPERATIONS = {
  authorizationUrl: 'authorization_url',
  exchangeCode: 'exchange_code',
  refresh: 'refresh',
  recheck: 'recheck',
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
/** The same for a synchronous method of two arguments (no array per call on the hot path). */
type RunSync = (operation: string, fn: (a: unknown, b: unknown) => unknown, self: unknown, a: unknown, b: unknown) => unknown

/** Synchronous store methods and the operation they are measured as. */
const SYNC_STORE_OPERATIONS: ReadonlyMap<string, string> = new Map([['getAccessTokenNow', 'getAccessToken']])

/**
 * `target` with its listed methods going through `run`: an object whose own properties are those
 * methods (the hot path never meets a Proxy trap), in front of a Proxy that serves everything else
 * from the target, functions bound to it (class stores keep private fields). A listed method is
 * looked up on the target at each call, so one replaced on the target later is picked up; other
 * functions are bound once per underlying function, with the same effect.
 */
function measured<T extends object> (
  target: T,
  operations: ReadonlyMap<string, string>,
  { run, runSync }: { run: Run, runSync: RunSync },
  syncOperations: ReadonlyMap<string, string> = new Map()
): T {
  const bound = new Map<PropertyKey, { original: unknown, wrapper: unknown }>()
  const rest = new Proxy(target, {
    get (obj, prop) {
      const value: unknown = Reflect.get(obj, prop, obj)
      if (typeof value !== 'function') return value
      const hit = bound.get(prop)
      if (hit !== undefined && hit.original === value) return hit.wrapper
      const wrapper = (value as (...args: unknown[]) => unknown).bind(obj)
      bound.set(prop, { original: value, wrapper })
      return wrapper
    }
  })
  const front = Object.create(rest) as Record<string, unknown>
  const define = (method: string, value: unknown): void => {
    // Assignable, as on the store itself (a caller patching a method patches what the services call).
    Object.defineProperty(front, method, { value, enumerable: false, writable: true, configurable: true })
  }
  for (const [method, operation] of operations) {
    if (typeof Reflect.get(target, method, target) !== 'function') continue
    define(method, function (...args: unknown[]) {
      return run(operation, Reflect.get(target, method, target) as (...a: unknown[]) => unknown, target, args)
    })
  }
  for (const [method, operation] of syncOperations) {
    if (typeof Reflect.get(target, method, target) !== 'function') continue
    define(method, function (a: unknown, b: unknown) {
      return runSync(operation, Reflect.get(target, method, target) as (a: unknown, b: unknown) => unknown, target, a, b)
    })
  }
  return front as T
}

/**
 * Run one measured operation: a span (made current while it runs, so that client spans of a Redis
 * or HTTP instrumentation nest under it) and a recorder call with the duration and the outcome.
 * The arguments (hashes, keys, tokens) are never looked at.
 */
function runner (
  tracer: Tracer | undefined,
  live: () => boolean,
  spanName: (operation: string) => string,
  attributes: (operation: string) => Attributes,
  record: ((operation: string, ms: number, error: unknown, failed: boolean) => void) | undefined,
  failureAttributes: (err: unknown) => Attributes
): { run: Run, runSync: RunSync } {
  // A span only under a recording parent (a flow step, an HTTP span): never a trace of its own; and
  // no context lookup at all while no OpenTelemetry SDK is registered (`live`).
  const startSpan = (operation: string): Span | undefined => tracer !== undefined && live() && trace.getActiveSpan()?.isRecording() === true
    ? tracer.startSpan(spanName(operation), { kind: SpanKind.INTERNAL, attributes: attributes(operation) })
    : undefined
  /** Nothing to record and nobody listening (no SDK, no parent, not sampled): no timing, no extra promise. */
  const quiet = (span: Span | undefined): boolean => record === undefined && (span === undefined || !span.isRecording())
  /** Call with the span current while it runs (so that client spans of a Redis or HTTP instrumentation nest under it). */
  const within = (span: Span | undefined, call: () => unknown): unknown => span !== undefined && span.isRecording()
    ? context.with(trace.setSpan(context.active(), span), call)
    : call()
  /** The outcome: recorded, on the span, and the span ended. */
  const finish = (operation: string, start: number, span: Span | undefined, failure: { err: unknown } | undefined): void => {
    record?.(operation, performance.now() - start, failure?.err, failure !== undefined)
    if (failure !== undefined && span !== undefined) {
      span.setAttributes(failureAttributes(failure.err))
      span.setStatus({ code: SpanStatusCode.ERROR })
    }
    span?.end()
  }
  const run: Run = (operation, fn, self, args) => {
    const span = startSpan(operation)
    if (quiet(span)) {
      span?.end()
      try {
        return fn.apply(self, args) as Promise<unknown>
      } catch (err) {
        return Promise.reject(err)
      }
    }
    const start = performance.now()
    let pending: unknown
    try {
      pending = within(span, () => fn.apply(self, args))
    } catch (err) {
      finish(operation, start, span, { err })
      return Promise.reject(err)
    }
    return Promise.resolve(pending).then(
      result => { finish(operation, start, span, undefined); return result },
      (err: unknown) => { finish(operation, start, span, { err }); throw err }
    )
  }
  const runSync: RunSync = (operation, fn, self, a, b) => {
    const span = startSpan(operation)
    if (quiet(span)) {
      span?.end()
      return fn.call(self, a, b)
    }
    const start = performance.now()
    let result: unknown
    try {
      result = within(span, () => fn.call(self, a, b))
    } catch (err) {
      finish(operation, start, span, { err })
      throw err
    }
    // `undefined`: the store could not answer without I/O, and the operation that follows is measured.
    if (result === undefined) span?.end()
    else finish(operation, start, span, undefined)
    return result
  }
  return { run, runSync }
}

function always (): boolean {
  return true
}

/** A class of error, bounded: the code of a row of the errors table (all named FastifyError), else the class name. */
function errorType (err: unknown): string {
  if (!(err instanceof Error)) return typeof err
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && code.startsWith('FST_MCP_OAUTH_') ? code : err.name
}

/** The store, with a span and a measurement around every contract operation. */
export function instrumentStore (store: Store, tracer: Tracer | undefined, record: StorageRecorder | undefined, live: () => boolean = always): Store {
  const backend = store.constructor?.name ?? 'custom'
  const operations = new Map<string, string>(STORE_OPERATIONS.map(op => [op, op]))
  const attrs = new Map<string, Attributes>(STORE_OPERATIONS.map(op => [op, {
    'mcp_oauth.storage.operation': op,
    'mcp_oauth.storage.backend': backend
  }]))
  const names = new Map<string, string>(STORE_OPERATIONS.map(op => [op, `storage.${op}`]))
  const runners = runner(
    tracer,
    live,
    op => names.get(op) as string,
    op => attrs.get(op) as Attributes,
    record === undefined ? undefined : (op, ms, _err, failed) => record(op, ms, !failed),
    err => ({ 'error.type': errorType(err) })
  )
  return measured(store, operations, runners, SYNC_STORE_OPERATIONS)
}

/** The provider, with a span and a measurement around every call to the identity provider. */
export function instrumentProvider (provider: Provider, tracer: Tracer | undefined, record: ProviderRecorder | undefined, live: () => boolean = always): Provider {
  const name = provider.name
  const operations = new Map<string, string>(Object.entries(PROVIDER_OPERATIONS))
  const runners = runner(
    tracer,
    live,
    op => `provider.${op}`,
    op => ({ 'mcp_oauth.provider.name': name, 'mcp_oauth.provider.operation': op }),
    record === undefined ? undefined : (op, ms, err, failed) => record(name, op, ms, failed ? (err ?? new errors.OPERATION_FAILED()) : undefined),
    err => ({ 'error.type': errorType(err), 'mcp_oauth.provider.error_kind': errorKind(err) })
  )
  return measured(provider, operations, runners)
}
