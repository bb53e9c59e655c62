//! Frame → input tensor: crop, resize (bilinear), mask, colour conversion, normalisation
//! and layout in one pass over the output, writing straight into the batch buffer.

use crate::engine::manifest::{Colour, InputSpec, Layout};
use crate::image::{ImageView, Pixels, Rect, YuvMatrix};
use std::ops::Range;

/// Everything needed to turn an image region into one sample of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Output width.
    pub width: usize,
    /// Output height.
    pub height: usize,
    /// Output layout.
    pub layout: Layout,
    /// Output channels.
    pub colour: Colour,
    /// Per channel `(scale, bias)`: `value = pixel·scale + bias`.
    pub affine: [(f32, f32); 3],
}

impl Sampling {
    /// The sampling a manifest input asks for.
    pub fn for_input(spec: &InputSpec) -> Sampling {
        Sampling {
            width: spec.width,
            height: spec.height,
            layout: spec.layout,
            colour: spec.colour,
            affine: spec.affine(),
        }
    }

    /// Floats per sample.
    pub fn len(&self) -> usize {
        self.width * self.height * self.colour.channels()
    }

    /// `[1, c, h, w]` or `[1, h, w, c]`: the shape of one sample.
    pub fn layout_dims(&self) -> [i64; 4] {
        self.layout.shape(1, self.colour, self.width, self.height)
    }

    /// True only for a zero-sized output.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Horizontal taps for one output column: two source columns and the weight of the
/// second, in luma and (for I420) in chroma columns.
#[derive(Clone, Copy)]
struct Tap {
    x0: usize,
    x1: usize,
    w1: f32,
    cx0: usize,
    cx1: usize,
    cw1: f32,
}

/// Bilinear weights along one axis for a source of `n` samples, at continuous position
/// `centre` (in samples): the two neighbours and the weight of the second.
#[inline]
fn axis(centre: f32, n: usize) -> (usize, usize, f32) {
    let f = (centre - 0.5).clamp(0.0, n as f32 - 1.0);
    let i0 = f.floor() as usize;
    (i0, (i0 + 1).min(n - 1), f - i0 as f32)
}

#[inline]
fn lerp2(a0: u8, a1: u8, b0: u8, b1: u8, wx: f32, wy: f32) -> f32 {
    let a = f32::from(a0) * (1.0 - wx) + f32::from(a1) * wx;
    let b = f32::from(b0) * (1.0 - wx) + f32::from(b1) * wx;
    a * (1.0 - wy) + b * wy
}

/// The columns whose centre satisfies `inside`, an interval test: since the centres
/// only grow, they form one contiguous run.
fn run_of(centres: &[f32], inside: impl Fn(f32) -> bool) -> Range<usize> {
    let start = centres.iter().position(|&c| inside(c)).unwrap_or(centres.len());
    let len = centres[start..].iter().take_while(|&&c| inside(c)).count();
    start..start + len
}

/// The two source rows an output row reads, per layout.
enum Rows<'a> {
    Rgb {
        r0: &'a [u8],
        r1: &'a [u8],
        wy: f32,
    },
    I420 {
        y0: &'a [u8],
        y1: &'a [u8],
        wy: f32,
        u0: &'a [u8],
        u1: &'a [u8],
        v0: &'a [u8],
        v1: &'a [u8],
        cwy: f32,
        matrix: YuvMatrix,
    },
}

impl<'a> Rows<'a> {
    fn at(view: &ImageView<'a>, cy: f32) -> Rows<'a> {
        let (y0, y1, wy) = axis(cy, view.height());
        match *view.pixels() {
            Pixels::Rgb { data, stride } => {
                let row = |y: usize| &data[y * stride..y * stride + view.width() * 3];
                Rows::Rgb { r0: row(y0), r1: row(y1), wy }
            }
            Pixels::I420 { y, u, v, y_stride, c_stride, matrix } => {
                let (c0, c1, cwy) = axis(cy / 2.0, view.height().div_ceil(2));
                Rows::I420 {
                    y0: &y[y0 * y_stride..],
                    y1: &y[y1 * y_stride..],
                    wy,
                    u0: &u[c0 * c_stride..],
                    u1: &u[c1 * c_stride..],
                    v0: &v[c0 * c_stride..],
                    v1: &v[c1 * c_stride..],
                    cwy,
                    matrix,
                }
            }
        }
    }

    /// RGB (0–255) at the columns `taps` (a non-empty run), into `out`: one loop per
    /// pixel layout. For I420 the two source rows are first blended vertically over the
    /// run's span (contiguous, so it vectorises), leaving one horizontal lerp per plane
    /// and pixel; `blended` holds those rows.
    fn fill(&self, taps: &[Tap], out: &mut [[f32; 3]], blended: &mut Blended) {
        match self {
            Rows::Rgb { r0, r1, wy } => {
                for (t, o) in taps.iter().zip(out) {
                    let (a, b) = (t.x0 * 3, t.x1 * 3);
                    *o = std::array::from_fn(|c| lerp2(r0[a + c], r0[b + c], r1[a + c], r1[b + c], t.w1, *wy));
                }
            }
            Rows::I420 { y0, y1, wy, u0, u1, v0, v1, cwy, matrix } => {
                let (Some(first), Some(last)) = (taps.first(), taps.last()) else { return };
                let luma = first.x0..last.x1 + 1;
                let chroma = first.cx0..last.cx1 + 1;
                blend(&y0[luma.clone()], &y1[luma.clone()], *wy, &mut blended.y[luma]);
                blend(&u0[chroma.clone()], &u1[chroma.clone()], *cwy, &mut blended.u[chroma.clone()]);
                blend(&v0[chroma.clone()], &v1[chroma.clone()], *cwy, &mut blended.v[chroma]);
                let (ys, us, vs) = (&blended.y, &blended.u, &blended.v);
                let matrix = matrix.linear();
                for (t, o) in taps.iter().zip(out) {
                    let y = ys[t.x0] * (1.0 - t.w1) + ys[t.x1] * t.w1;
                    let u = us[t.cx0] * (1.0 - t.cw1) + us[t.cx1] * t.cw1;
                    let v = vs[t.cx0] * (1.0 - t.cw1) + vs[t.cx1] * t.cw1;
                    *o = matrix.rgb(y, u, v).map(|k| k.clamp(0.0, 255.0));
                }
            }
        }
    }
}

/// One output row's source rows blended vertically, per plane (I420 only).
struct Blended {
    y: Vec<f32>,
    u: Vec<f32>,
    v: Vec<f32>,
}

impl Blended {
    fn for_view(view: &ImageView<'_>) -> Blended {
        let (w, cw) = match view.pixels() {
            Pixels::I420 { .. } => (view.width(), view.width().div_ceil(2)),
            Pixels::Rgb { .. } => (0, 0),
        };
        Blended { y: vec![0.0; w], u: vec![0.0; cw], v: vec![0.0; cw] }
    }
}

/// `out = a·(1 − w) + b·w`, element by element.
#[inline]
fn blend(a: &[u8], b: &[u8], w: f32, out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = f32::from(a) * (1.0 - w) + f32::from(b) * w;
    }
}

/// Samples `region` of `view` (pixel coordinates; parts outside the image are black)
/// into `out`, blacking out pixels whose centre lies in `mask`.
///
/// `out` must hold exactly [`Sampling::len`] floats. Works a row at a time: the source
/// taps of every column are computed once, the visible columns of a row (inside the
/// picture, outside the mask) are one or two runs, and each stage is a loop of its own
/// (interpolate, colour and normalise, store in the layout).
pub fn sample(view: &ImageView<'_>, region: Rect, mask: Option<Rect>, s: &Sampling, out: &mut [f32]) {
    debug_assert_eq!(out.len(), s.len());
    let (w, h) = (s.width, s.height);
    let (iw, ih) = (view.width() as f32, view.height() as f32);
    let step_x = region.w / w as f32;
    let step_y = region.h / h as f32;
    let centres: Vec<f32> = (0..w).map(|dx| region.x + (dx as f32 + 0.5) * step_x).collect();
    let taps: Vec<Tap> = centres
        .iter()
        .map(|&centre| {
            let (x0, x1, w1) = axis(centre, view.width());
            let (cx0, cx1, cw1) = axis(centre / 2.0, view.width().div_ceil(2));
            Tap { x0, x1, w1, cx0, cx1, cw1 }
        })
        .collect();
    let in_picture = run_of(&centres, |c| c >= 0.0 && c < iw);
    let in_mask = mask.map(|m| run_of(&centres, |c| c >= m.x && c < m.x + m.w));
    let channels = s.colour.channels();
    let plane = w * h;
    let black: [f32; 3] = std::array::from_fn(|c| s.affine[c].1);
    let mut rgb = vec![[0f32; 3]; w];
    let mut values = vec![black; w];
    let mut blended = Blended::for_view(view);
    for dy in 0..h {
        let cy = region.y + (dy as f32 + 0.5) * step_y;
        values.fill(black);
        if cy >= 0.0 && cy < ih {
            let rows = Rows::at(view, cy);
            let masked = match (mask, &in_mask) {
                (Some(m), Some(cols)) if cy >= m.y && cy < m.y + m.h => cols.clone(),
                _ => 0..0,
            };
            // The picture's columns less the masked run: up to two runs.
            let left = in_picture.start..in_picture.end.min(masked.start.max(in_picture.start));
            let right = masked.end.max(in_picture.start)..in_picture.end;
            let runs = if masked.is_empty() { [in_picture.clone(), 0..0] } else { [left, right] };
            for run in runs.into_iter().filter(|r| !r.is_empty()) {
                rows.fill(&taps[run.clone()], &mut rgb[run.clone()], &mut blended);
                normalise(s, &rgb[run.clone()], &mut values[run]);
            }
        }
        match s.layout {
            Layout::Nchw => {
                for c in 0..channels {
                    let dst = &mut out[c * plane + dy * w..][..w];
                    for (d, v) in dst.iter_mut().zip(&values) {
                        *d = v[c];
                    }
                }
            }
            Layout::Nhwc => {
                let dst = &mut out[dy * w * channels..][..w * channels];
                for (d, v) in dst.chunks_exact_mut(channels).zip(&values) {
                    d.copy_from_slice(&v[..channels]);
                }
            }
        }
    }
}

/// RGB (0–255) → the input's channels, scaled and offset.
fn normalise(s: &Sampling, rgb: &[[f32; 3]], out: &mut [[f32; 3]]) {
    let a = s.affine;
    match s.colour {
        Colour::Rgb => {
            for (o, p) in out.iter_mut().zip(rgb) {
                *o = std::array::from_fn(|c| p[c] * a[c].0 + a[c].1);
            }
        }
        Colour::Bgr => {
            for (o, p) in out.iter_mut().zip(rgb) {
                *o = std::array::from_fn(|c| p[2 - c] * a[c].0 + a[c].1);
            }
        }
        Colour::Gray => {
            for (o, p) in out.iter_mut().zip(rgb) {
                o[0] = (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) * a[0].0 + a[0].1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::RgbImage;

    fn gradient(w: usize, h: usize) -> RgbImage {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 10) as u8, (y * 10) as u8, 200]);
            }
        }
        RgbImage { data, width: w, height: h }
    }

    fn plain(w: usize, h: usize, colour: Colour, layout: Layout) -> Sampling {
        Sampling { width: w, height: h, layout, colour, affine: [(1.0, 0.0); 3] }
    }

    #[test]
    fn identity_resize_copies_pixels() {
        let img = gradient(4, 3);
        let s = plain(4, 3, Colour::Rgb, Layout::Nhwc);
        let mut out = vec![0.0; s.len()];
        sample(&img.view(), Rect { x: 0.0, y: 0.0, w: 4.0, h: 3.0 }, None, &s, &mut out);
        let want: Vec<f32> = img.data.iter().map(|&b| f32::from(b)).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn outside_and_masked_pixels_are_black_after_normalisation() {
        let img = gradient(4, 4);
        let mut s = plain(8, 4, Colour::Gray, Layout::Nchw);
        s.affine = [(1.0 / 127.5, -1.0); 3];
        let mut out = vec![0.0; s.len()];
        // Region twice as wide as the image: the right half is outside.
        sample(
            &img.view(),
            Rect { x: 0.0, y: 0.0, w: 8.0, h: 4.0 },
            Some(Rect { x: 0.0, y: 0.0, w: 1.0, h: 1.0 }),
            &s,
            &mut out,
        );
        assert_eq!(out[0], -1.0, "masked pixel");
        assert_eq!(out[7], -1.0, "outside the image");
        assert!(out[1] > -1.0, "visible pixel keeps its value");
    }

    #[test]
    fn bgr_swaps_channels_in_nchw() {
        let img = RgbImage { data: vec![10, 20, 30], width: 1, height: 1 };
        let s = plain(1, 1, Colour::Bgr, Layout::Nchw);
        let mut out = vec![0.0; 3];
        sample(&img.view(), Rect { x: 0.0, y: 0.0, w: 1.0, h: 1.0 }, None, &s, &mut out);
        assert_eq!(out, vec![30.0, 20.0, 10.0]);
    }

    /// The definition, one output pixel at a time: what the row-wise sampler must equal.
    fn per_pixel(view: &ImageView<'_>, region: Rect, mask: Option<Rect>, s: &Sampling) -> Vec<f32> {
        let (w, h, ch) = (s.width, s.height, s.colour.channels());
        let mut out = vec![0.0; s.len()];
        for dy in 0..h {
            let cy = region.y + (dy as f32 + 0.5) * (region.h / h as f32);
            for dx in 0..w {
                let cx = region.x + (dx as f32 + 0.5) * (region.w / w as f32);
                let inside = cx >= 0.0 && cx < view.width() as f32 && cy >= 0.0 && cy < view.height() as f32;
                let visible = inside && !mask.is_some_and(|m| m.contains(cx, cy));
                let tap = |c: f32| {
                    let (x0, x1, w1) = axis(c, view.width());
                    let (cx0, cx1, cw1) = axis(c / 2.0, view.width().div_ceil(2));
                    Tap { x0, x1, w1, cx0, cx1, cw1 }
                };
                let mut rgb = [[0f32; 3]];
                if visible {
                    Rows::at(view, cy).fill(&[tap(cx)], &mut rgb, &mut Blended::for_view(view));
                }
                let p = rgb[0];
                let values = match s.colour {
                    Colour::Rgb => p,
                    Colour::Bgr => [p[2], p[1], p[0]],
                    Colour::Gray => [0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2], 0.0, 0.0],
                };
                for (c, (value, (scale, bias))) in values.into_iter().zip(s.affine).take(ch).enumerate() {
                    let v = if visible { value * scale + bias } else { bias };
                    let i = match s.layout {
                        Layout::Nchw => c * w * h + dy * w + dx,
                        Layout::Nhwc => (dy * w + dx) * ch + c,
                    };
                    out[i] = v;
                }
            }
        }
        out
    }

    #[test]
    fn row_wise_sampling_equals_the_per_pixel_definition() {
        let (w, h) = (37, 23);
        let rgb = RgbImage { data: (0..w * h * 3).map(|i| (i * 13 % 253) as u8).collect(), width: w, height: h };
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let yuv: Vec<u8> = (0..w * h + 2 * cw * ch).map(|i| (i * 7 % 251) as u8).collect();
        let i420 = ImageView::i420(&yuv, w, h, [0, w * h, w * h + cw * ch], [w, cw, cw], YuvMatrix::BT709).unwrap();
        let regions = [
            Rect { x: 0.0, y: 0.0, w: w as f32, h: h as f32 },
            Rect { x: -5.5, y: -9.0, w: 50.0, h: 40.0 },
            Rect { x: 20.0, y: 10.0, w: 30.0, h: 30.0 },
            Rect { x: 3.2, y: 4.7, w: 6.0, h: 2.5 },
        ];
        let masks =
            [None, Some(Rect { x: 8.0, y: 5.0, w: 10.0, h: 9.0 }), Some(Rect { x: -4.0, y: 0.0, w: 60.0, h: 3.0 })];
        for view in [rgb.view(), i420] {
            for region in regions {
                for mask in masks {
                    for colour in [Colour::Rgb, Colour::Bgr, Colour::Gray] {
                        for layout in [Layout::Nchw, Layout::Nhwc] {
                            let s = Sampling {
                                width: 11,
                                height: 7,
                                layout,
                                colour,
                                affine: [(0.5, -3.0), (0.25, 1.0), (2.0, 0.5)],
                            };
                            let mut out = vec![f32::NAN; s.len()];
                            sample(&view, region, mask, &s, &mut out);
                            assert_eq!(
                                out,
                                per_pixel(&view, region, mask, &s),
                                "{region:?} {mask:?} {colour:?} {layout:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn i420_at_its_own_size_gives_the_pictures_rgb() {
        // Any luma, flat chroma: at identity size no interpolation changes a sample, so the
        // result must be the textbook conversion of each pixel (to_rgb rounds to bytes).
        let (w, h) = (9usize, 6usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut yuv: Vec<u8> = (0..w * h).map(|i| (16 + i * 37 % 220) as u8).collect();
        yuv.extend(std::iter::repeat_n(90, cw * ch));
        yuv.extend(std::iter::repeat_n(200, cw * ch));
        let view = ImageView::i420(&yuv, w, h, [0, w * h, w * h + cw * ch], [w, cw, cw], YuvMatrix::BT601).unwrap();
        let s = plain(w, h, Colour::Rgb, Layout::Nhwc);
        let mut out = vec![0.0; s.len()];
        sample(&view, Rect { x: 0.0, y: 0.0, w: w as f32, h: h as f32 }, None, &s, &mut out);
        for (got, want) in out.iter().zip(view.to_rgb().data) {
            assert!((got - f32::from(want)).abs() <= 0.5 + 1e-3, "{got} vs {want}");
        }
    }
}
