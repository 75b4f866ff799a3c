/**
 * The growth exponent of a cost over job sizes: the slope of the least-squares line
 * through (log size, log cost). 1 is linear growth (the cost per task is constant), 2
 * quadratic. Null with fewer than two distinct sizes or a cost that is not positive.
 */
export function growthExponent(points: ReadonlyArray<{ readonly size: number; readonly cost: number }>): number | null {
  if (points.some((p) => !(p.size > 0) || !(p.cost > 0))) return null;
  const xs = points.map((p) => Math.log(p.size));
  const ys = points.map((p) => Math.log(p.cost));
  const n = points.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (xs[i]! - mx) ** 2;
    sxy += (xs[i]! - mx) * (ys[i]! - my);
  }
  if (sxx === 0) return null;
  return Math.round((sxy / sxx) * 1000) / 1000;
}
