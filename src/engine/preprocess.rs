//! Frame → input tensor: crop, resize (bilinear), mask, colour conversion, normalisation
//! and layout in one pass over the output, writing straight into the batch buffer.

use crate::engine::manifest::{Colour, InputSpec, Layout};
use crate::image::{Rect, RgbView};

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

/// Horizontal taps for one output column: two source columns and the weight of the second.
#[derive(Clone, Copy)]
struct Tap {
    x0: usize,
    x1: usize,
    w1: f32,
    centre: f32,
    inside: bool,
}

/// Samples `region` of `view` (pixel coordinates; parts outside the image are black)
/// into `out`, blacking out pixels whose centre lies in `mask`.
///
/// `out` must hold exactly [`Sampling::len`] floats.
pub fn sample(view: &RgbView<'_>, region: Rect, mask: Option<Rect>, s: &Sampling, out: &mut [f32]) {
    debug_assert_eq!(out.len(), s.len());
    let (w, h) = (s.width, s.height);
    let (iw, ih) = (view.width() as f32, view.height() as f32);
    let step_x = region.w / w as f32;
    let step_y = region.h / h as f32;
    let taps: Vec<Tap> = (0..w)
        .map(|dx| {
            let centre = region.x + (dx as f32 + 0.5) * step_x;
            let fx = (centre - 0.5).clamp(0.0, iw - 1.0);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(view.width() - 1);
            Tap { x0, x1, w1: fx - x0 as f32, centre, inside: centre >= 0.0 && centre < iw }
        })
        .collect();
    let channels = s.colour.channels();
    let plane = w * h;
    let black: [f32; 3] = std::array::from_fn(|c| s.affine[c].1);
    for dy in 0..h {
        let cy = region.y + (dy as f32 + 0.5) * step_y;
        let row_inside = cy >= 0.0 && cy < ih;
        let fy = (cy - 0.5).clamp(0.0, ih - 1.0);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(view.height() - 1);
        let wy = fy - y0 as f32;
        let (r0, r1) = (view.row(y0), view.row(y1));
        for (dx, t) in taps.iter().enumerate() {
            let visible = row_inside && t.inside && !mask.is_some_and(|m| m.contains(t.centre, cy));
            let mut px = [0f32; 3];
            if visible {
                for (c, v) in px.iter_mut().enumerate() {
                    let a = f32::from(r0[t.x0 * 3 + c]) * (1.0 - t.w1) + f32::from(r0[t.x1 * 3 + c]) * t.w1;
                    let b = f32::from(r1[t.x0 * 3 + c]) * (1.0 - t.w1) + f32::from(r1[t.x1 * 3 + c]) * t.w1;
                    *v = a * (1.0 - wy) + b * wy;
                }
            }
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
