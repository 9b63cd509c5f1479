import t from 'tap'
import { Counter, Histogram, Registry } from 'prom-client'
import { FastHistogram, PendingCounts } from '../lib/telemetry/series.js'

const BUCKETS = [0.5, 1, 2.5, 10]
const VALUES = [0, 0.5, 0.50001, 1, 2, 2.5, 3, 10, 10.5, 1e6, 0.25]

t.test('FastHistogram: the same exposition as a prom-client Histogram fed the same values', async t => {
  const ours = new Registry()
  const theirs = new Registry()
  const fast = new FastHistogram({ name: 'h_ms', help: 'help text', labelNames: ['endpoint'], buckets: [10, 0.5, 2.5, 1] })
  ours.registerMetric(fast as never)
  const reference = new Histogram({ name: 'h_ms', help: 'help text', labelNames: ['endpoint'], buckets: BUCKETS, registers: [theirs] })
  const a = fast.series({ endpoint: '/a' })
  const b = fast.series({ endpoint: '/b "quoted"' })
  t.equal(fast.series({ endpoint: '/a' }), a, 'one series per label set')
  for (const v of VALUES) {
    a.observe(v)
    reference.observe({ endpoint: '/a' }, v)
  }
  b.observe(7)
  reference.observe({ endpoint: '/b "quoted"' }, 7)
  t.equal(await ours.metrics(), await theirs.metrics(), 'byte for byte, buckets sorted, le inclusive, labels escaped')
  // JSON (cluster aggregation reads it): the same samples, `le` as text rather than a number.
  const samples = async (r: Registry) => (await r.getMetricsAsJSON()).flatMap(m => m.values.map(v =>
    `${(v as { metricName?: string }).metricName ?? m.name} ${JSON.stringify(Object.entries(v.labels).map(([k, l]) => [k, String(l)]).sort())} ${v.value}`)).sort()
  t.same(await samples(ours), await samples(theirs), 'and as JSON')

  a.observe(Number.NaN)
  a.observe(Number.POSITIVE_INFINITY)
  t.equal(a.count, VALUES.length, 'non-finite values are not counted')

  ours.resetMetrics()
  theirs.resetMetrics()
  a.observe(3)
  reference.observe({ endpoint: '/a' }, 3)
  t.match(await ours.metrics(), /h_ms_count\{endpoint="\/a"\} 1\n/, 'reset: back to zero, cached series still counting')
  t.throws(() => fast.series({ route: '/x' }), /unknown label route/)
})

t.test('PendingCounts: increments reach the counter at scrape time, once', async t => {
  const registry = new Registry()
  const pending = new PendingCounts()
  const counter: Counter<string> = new Counter({
    name: 'c_total',
    help: 'h',
    labelNames: ['op'],
    registers: [registry],
    collect () { pending.flush(this) }
  })
  const x = pending.series({ op: 'x' })
  const y = pending.series({ op: 'y' })
  for (let i = 0; i < 5; i++) x.inc()
  y.inc()
  t.match(await registry.metrics(), /c_total\{op="x"\} 5\nc_total\{op="y"\} 1/)
  x.inc()
  const again = await registry.metrics()
  t.match(again, /c_total\{op="x"\} 6\n/, 'nothing counted twice')
  t.match(again, /c_total\{op="y"\} 1/)
  counter.inc({ op: 'x' }, 0)
})
