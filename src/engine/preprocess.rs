//! Frame → input tensor: crop, resize (bilinear), mask, colour conversion, normalisation
//! and layout in one pass over the output, writing straight into the batch buffer.

use crate::engine::manifest::{Colour, InputSpec, Layout};
use crate::image::{ImageView, Pixels, Rect, YuvMatrix};

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
        let (c, h, w) = (self.colour.channels() as i64, self.height as i64, self.width as i64);
        match self.layout {
            Layout::Nchw => [1, c, h, w],
            Layout::Nhwc => [1, h, w, c],
        }
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
    centre: f32,
    inside: bool,
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

    /// RGB (0–255) at one output column.
    #[inline]
    fn rgb(&self, t: &Tap) -> [f32; 3] {
        match self {
            Rows::Rgb { r0, r1, wy } => std::array::from_fn(|c| {
                lerp2(r0[t.x0 * 3 + c], r0[t.x1 * 3 + c], r1[t.x0 * 3 + c], r1[t.x1 * 3 + c], t.w1, *wy)
            }),
            Rows::I420 { y0, y1, wy, u0, u1, v0, v1, cwy, matrix } => {
                let y = lerp2(y0[t.x0], y0[t.x1], y1[t.x0], y1[t.x1], t.w1, *wy);
                let u = lerp2(u0[t.cx0], u0[t.cx1], u1[t.cx0], u1[t.cx1], t.cw1, *cwy);
                let v = lerp2(v0[t.cx0], v0[t.cx1], v1[t.cx0], v1[t.cx1], t.cw1, *cwy);
                matrix.rgb(y, u, v).map(|k| k.clamp(0.0, 255.0))
            }
        }
    }
}

/// Samples `region` of `view` (pixel coordinates; parts outside the image are black)
/// into `out`, blacking out pixels whose centre lies in `mask`.
///
/// `out` must hold exactly [`Sampling::len`] floats.
pub fn sample(view: &ImageView<'_>, region: Rect, mask: Option<Rect>, s: &Sampling, out: &mut [f32]) {
    debug_assert_eq!(out.len(), s.len());
    let (w, h) = (s.width, s.height);
    let (iw, ih) = (view.width() as f32, view.height() as f32);
    let step_x = region.w / w as f32;
    let step_y = region.h / h as f32;
    let taps: Vec<Tap> = (0..w)
        .map(|dx| {
            let centre = region.x + (dx as f32 + 0.5) * step_x;
            let (x0, x1, w1) = axis(centre, view.width());
            let (cx0, cx1, cw1) = axis(centre / 2.0, view.width().div_ceil(2));
            Tap { x0, x1, w1, cx0, cx1, cw1, centre, inside: centre >= 0.0 && centre < iw }
        })
        .collect();
    let channels = s.colour.channels();
    let plane = w * h;
    let black: [f32; 3] = std::array::from_fn(|c| s.affine[c].1);
    for dy in 0..h {
        let cy = region.y + (dy as f32 + 0.5) * step_y;
        let row_inside = cy >= 0.0 && cy < ih;
        let rows = Rows::at(view, cy);
        for (dx, t) in taps.iter().enumerate() {
            let visible = row_inside && t.inside && !mask.is_some_and(|m| m.contains(t.centre, cy));
            let px = if visible { rows.rgb(t) } else { [0f32; 3] };
            let values: [f32; 3] = match s.colour {
                Colour::Rgb => px,
                Colour::Bgr => [px[2], px[1], px[0]],
                Colour::Gray => [0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2], 0.0, 0.0],
            };
            for c in 0..channels {
                let v = if visible { values[c] * s.affine[c].0 + s.affine[c].1 } else { black[c] };
                let idx = match s.layout {
                    Layout::Nchw => c * plane + dy * w + dx,
                    Layout::Nhwc => (dy * w + dx) * channels + c,
                };
                out[idx] = v;
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
}
