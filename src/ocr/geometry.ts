// Plane geometry for text boxes: convex hulls and minimum-area rotated rectangles (what OpenCV's minAreaRect gives
// PaddleOCR's DB post-processing), and the box a rectangle makes in reading order.

export type Point = readonly [number, number];

/** A rotated rectangle: its centre, the unit vector along its long side (pointing right), and its half-extents. */
export interface RotatedRect {
  readonly cx: number;
  readonly cy: number;
  /** Unit vector along the long side, with ux ≥ 0 (left to right); the short side runs along (−uy, ux). */
  readonly ux: number;
  readonly uy: number;
  /** Half the long side and half the short side. */
  readonly halfLong: number;
  readonly halfShort: number;
}

const cross = (o: Point, a: Point, b: Point) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);

/** The convex hull of `points`, counter-clockwise, without collinear points (Andrew's monotone chain). */
export function convexHull(points: readonly Point[]): Point[] {
  const p = [...points].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (p.length < 3) return p;
  const lower: Point[] = [];
  for (const q of p) {
    while (lower.length >= 2 && cross(lower[lower.length - 2]!, lower[lower.length - 1]!, q) <= 0) lower.pop();
    lower.push(q);
  }
  const upper: Point[] = [];
  for (let i = p.length - 1; i >= 0; i--) {
    const q = p[i]!;
    while (upper.length >= 2 && cross(upper[upper.length - 2]!, upper[upper.length - 1]!, q) <= 0) upper.pop();
    upper.push(q);
  }
  return lower.slice(0, -1).concat(upper.slice(0, -1));
}

/**
 * The rectangle of least area enclosing `points` (rotating calipers: one side of the optimum lies on a hull edge).
 * Degenerate sets (one point, a segment) give a rectangle of zero width.
 */
export function minAreaRect(points: readonly Point[]): RotatedRect {
  const hull = convexHull(points);
  if (hull.length === 0) return { cx: 0, cy: 0, ux: 1, uy: 0, halfLong: 0, halfShort: 0 };
  let best: { area: number; ex: number; ey: number; lo: [number, number]; hi: [number, number] } | undefined;
  const n = hull.length;
  for (let i = 0; i < Math.max(n, 1); i++) {
    const a = hull[i]!, b = hull[(i + 1) % n]!;
    let ex = b[0] - a[0], ey = b[1] - a[1];
    const len = Math.hypot(ex, ey);
    if (len === 0) [ex, ey] = [1, 0];
    else [ex, ey] = [ex / len, ey / len];
    let minU = Infinity, maxU = -Infinity, minV = Infinity, maxV = -Infinity;
    for (const [x, y] of hull) {
      const u = x * ex + y * ey, v = -x * ey + y * ex;
      minU = Math.min(minU, u); maxU = Math.max(maxU, u);
      minV = Math.min(minV, v); maxV = Math.max(maxV, v);
    }
    const area = (maxU - minU) * (maxV - minV);
    if (!best || area < best.area) best = { area, ex, ey, lo: [minU, minV], hi: [maxU, maxV] };
  }
  const { ex, ey, lo, hi } = best!;
  const mu = (lo[0] + hi[0]) / 2, mv = (lo[1] + hi[1]) / 2;
  const cx = mu * ex - mv * ey, cy = mu * ey + mv * ex;
  let hu = (hi[0] - lo[0]) / 2, hv = (hi[1] - lo[1]) / 2;
  // The long side's direction: e if the u extent is longer, else e turned by 90°.
  let ux = ex, uy = ey;
  if (hv > hu) {
    [ux, uy] = [-ey, ex];
    [hu, hv] = [hv, hu];
  }
  // Point it right (and down when vertical), so the box reads left to right.
  if (ux < 0 || (ux === 0 && uy < 0)) [ux, uy] = [-ux, -uy];
  return { cx, cy, ux, uy, halfLong: hu, halfShort: hv };
}

/** The four corners of `r` in reading order: top-left, top-right, bottom-right, bottom-left. */
export function corners(r: RotatedRect): [Point, Point, Point, Point] {
  // The short side's unit vector pointing down the page for left-to-right text: (−uy, ux) has y = ux ≥ 0.
  const vx = -r.uy, vy = r.ux;
  const p = (s: number, t: number): Point => [r.cx + s * r.halfLong * r.ux + t * r.halfShort * vx, r.cy + s * r.halfLong * r.uy + t * r.halfShort * vy];
  return [p(-1, -1), p(1, -1), p(1, 1), p(-1, 1)];
}

/**
 * `r` grown as PaddleOCR's unclip grows a detected (shrunk) text region: the polygon offset outwards by
 * distance d = area · ratio / perimeter; for a rectangle, the bounding rectangle of that offset grows each side by d.
 */
export function unclip(r: RotatedRect, ratio: number): RotatedRect {
  const w = 2 * r.halfLong, h = 2 * r.halfShort;
  const perimeter = 2 * (w + h);
  const d = perimeter > 0 ? (w * h * ratio) / perimeter : 0;
  return { ...r, halfLong: r.halfLong + d, halfShort: r.halfShort + d };
}
