/**
 * The metric families updated on every request (HTTP requests and durations, storage operations
 * and durations) kept in plain numbers: a labelled series is found once (by the caller, which
 * caches it) and then updated with arithmetic. prom-client's own `inc()` and `observe()` validate
 * and hash the labels and allocate on every call, which cost more than the guard itself.
 *
 * - `PendingCounts` sits in front of a prom-client Counter: increments accumulate here and are
 *   handed to the Counter (one `inc(labels, n)` per series) when a scrape collects it.
 * - `FastHistogram` is a whole family that a prom-client Registry exposes like its own: it has
 *   the metric interface the registry reads (`name`, `help`, `type`, `aggregator`, `get()`,
 *   `reset()`), with buckets, `_sum` and `_count` in the text format Prometheus expects.
 */

import { errors } from '../errors.js'

type Labels = Record<string, string>

/** One series of a counter whose increments wait for the next scrape. */
export interface PendingSeries {
  inc (): void
}

/** Increments of a prom-client Counter, per series, until `flush` hands them over. */
export class PendingCounts {
  readonly #series: Array<{ labels: Labels, pending: number }> = []

  /** A new series with these labels (cache it: each call makes one). */
  series (labels: Labels): PendingSeries {
    const entry = { labels, pending: 0 }
    this.#series.push(entry)
    return { inc: () => { entry.pending++ } }
  }

  /** Give what accumulated to the counter: call from the Counter's `collect()`. */
  flush (counter: { inc (labels: Labels, value: number): void }): void {
    for (const entry of this.#series) {
      if (entry.pending === 0) continue
      counter.inc(entry.labels, entry.pending)
      entry.pending = 0
    }
  }
}

/** One labelled series of a FastHistogram. */
export class HistogramSeries {
  readonly labels: Labels
  /** Per bucket, not cumulative; the last slot counts values above the highest bound. */
  readonly counts: Float64Array
  sum = 0
  count = 0
  readonly #bounds: readonly number[]

  constructor (labels: Labels, bounds: readonly number[]) {
    this.labels = labels
    this.#bounds = bounds
    this.counts = new Float64Array(bounds.length + 1)
  }

  /** Prometheus buckets are "less than or equal to" their bound. */
  observe (value: number): void {
    if (!Number.isFinite(value)) return
    const bounds = this.#bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    this.counts[i] = (this.counts[i] as number) + 1
    this.sum += value
    this.count++
  }
}

interface MetricValue {
  value: number
  labels: Labels
  metricName?: string
}

/** A histogram family, registered in a prom-client Registry with `registry.registerMetric()`. */
export class FastHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly labelNames: readonly string[]
  readonly #bounds: readonly number[]
  readonly #series = new Map<string, HistogramSeries>()

  constructor (opts: { name: string, help: string, labelNames: readonly string[], buckets: readonly number[] }) {
    this.name = opts.name
    this.help = opts.help
    this.labelNames = opts.labelNames
    this.#bounds = [...opts.buckets].sort((a, b) => a - b)
  }

  /** The series of these label values (created empty the first time): cache it. */
  series (labels: Labels): HistogramSeries {
    const key = this.labelNames.map(name => labels[name] ?? '').join('\u0000')
    let series = this.#series.get(key)
    if (series === undefined) {
      for (const name of Object.keys(labels)) {
        if (!this.labelNames.includes(name)) throw new errors.UNKNOWN_LABEL(this.name, name)
      }
      series = new HistogramSeries(labels, this.#bounds)
      this.#series.set(key, series)
    }
    return series
  }

  async get (): Promise<{ name: string, help: string, type: string, aggregator: string, values: MetricValue[] }> {
    const values: MetricValue[] = []
    const bucket = `${this.name}_bucket`
    for (const s of this.#series.values()) {
      let cumulative = 0
      this.#bounds.forEach((bound, i) => {
        cumulative += s.counts[i] as number
        values.push({ metricName: bucket, labels: { le: String(bound), ...s.labels }, value: cumulative })
      })
      values.push({ metricName: bucket, labels: { le: '+Inf', ...s.labels }, value: s.count })
      values.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum })
      values.push({ metricName: `${this.name}_count`, labels: s.labels, value: s.count })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  /** `registry.resetMetrics()`: every series back to zero (cached series stay valid). */
  reset (): void {
    for (const s of this.#series.values()) {
      s.counts.fill(0)
      s.sum = 0
      s.count = 0
    }
  }
}
