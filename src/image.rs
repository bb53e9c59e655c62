//! Borrowed pictures (RGB or I420) and boxes: the common currency between the frame source, the
//! detector and the models, with no dependency on GStreamer.

/// A borrowed 8-bit picture, in one of the two layouts frames arrive in: packed RGB
/// (stills, and sources that give RGB) or planar I420 (what video decoders give; the
/// models' inputs are sampled from it directly, so a frame is never converted whole).
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    width: usize,
    height: usize,
    pixels: Pixels<'a>,
}

/// The bytes behind an [`ImageView`].
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// Packed RGB rows of `stride` bytes (≥ 3·width).
    Rgb {
        /// The rows.
        data: &'a [u8],
        /// Bytes per row.
        stride: usize,
    },
    /// Planar 4:2:0 YUV: full-size luma, chroma at half width and height.
    I420 {
        /// Luma plane.
        y: &'a [u8],
        /// Cb plane.
        u: &'a [u8],
        /// Cr plane.
        v: &'a [u8],
        /// Bytes per luma row.
        y_stride: usize,
        /// Bytes per chroma row.
        c_stride: usize,
        /// How to turn the samples into RGB.
        matrix: YuvMatrix,
    },
}

/// A YUV → RGB conversion: the colour matrix (BT.601 for SD, BT.709 for HD, BT.2020) and
/// whether samples use the full 0–255 range (JPEG) or the limited 16–235 one (video).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvMatrix {
    /// Luma weight of red.
    pub kr: f32,
    /// Luma weight of blue.
    pub kb: f32,
    /// Full-range samples.
    pub full_range: bool,
}

impl YuvMatrix {
    /// BT.601, limited range: standard-definition video.
    pub const BT601: YuvMatrix = YuvMatrix { kr: 0.299, kb: 0.114, full_range: false };
    /// BT.709, limited range: HD video.
    pub const BT709: YuvMatrix = YuvMatrix { kr: 0.2126, kb: 0.0722, full_range: false };
    /// BT.2020, limited range.
    pub const BT2020: YuvMatrix = YuvMatrix { kr: 0.2627, kb: 0.0593, full_range: false };

    /// RGB (0–255, unclamped) of one YUV sample; interpolating YUV and then converting
    /// equals converting and then interpolating, since the conversion is affine.
    #[inline]
    pub fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        self.linear().rgb(y, u, v)
    }

    /// The conversion as four products: worked out once per picture, not per pixel.
    #[inline]
    pub fn linear(&self) -> YuvLinear {
        let (y_offset, y_scale, c_scale) =
            if self.full_range { (0.0, 1.0, 1.0) } else { (16.0, 255.0 / 219.0, 255.0 / 224.0) };
        let kg = 1.0 - self.kr - self.kb;
        YuvLinear {
            y_offset,
            y_scale,
            r_from_v: 2.0 * (1.0 - self.kr) * c_scale,
            b_from_u: 2.0 * (1.0 - self.kb) * c_scale,
            g_from_u: 2.0 * self.kb * (1.0 - self.kb) / kg * c_scale,
            g_from_v: 2.0 * self.kr * (1.0 - self.kr) / kg * c_scale,
        }
    }
}

/// A [`YuvMatrix`] reduced to its coefficients: `R = Y' + r·V'`, `G = Y' − g_u·U' − g_v·V'`,
/// `B = Y' + b·U'` with `Y' = (Y − offset)·scale`, `U' = U − 128`, `V' = V − 128`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvLinear {
    y_offset: f32,
    y_scale: f32,
    r_from_v: f32,
    b_from_u: f32,
    g_from_u: f32,
    g_from_v: f32,
}

impl YuvLinear {
    /// RGB (0–255, unclamped) of one YUV sample.
    #[inline]
    pub fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let (y, u, v) = ((y - self.y_offset) * self.y_scale, u - 128.0, v - 128.0);
        [y + self.r_from_v * v, y - self.g_from_u * u - self.g_from_v * v, y + self.b_from_u * u]
    }
}

impl<'a> ImageView<'a> {
    /// Wraps packed RGB `data`; `None` when the buffer is too small for the geometry.
    pub fn new(data: &'a [u8], width: usize, height: usize, stride: usize) -> Option<Self> {
        let needed = if height == 0 { 0 } else { stride * (height - 1) + width * 3 };
        (stride >= width * 3 && data.len() >= needed && width > 0 && height > 0).then_some(ImageView {
            width,
            height,
            pixels: Pixels::Rgb { data, stride },
        })
    }

    /// Wraps an I420 buffer whose planes start at `offsets` with rows of `strides` bytes;
    /// `None` when a plane does not fit the buffer.
    pub fn i420(
        data: &'a [u8],
        width: usize,
        height: usize,
        offsets: [usize; 3],
        strides: [usize; 3],
        matrix: YuvMatrix,
    ) -> Option<Self> {
        if width == 0 || height == 0 || strides[1] != strides[2] {
            return None;
        }
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        let plane = |i: usize, w: usize, h: usize| -> Option<&'a [u8]> {
            let len = strides[i].checked_mul(h - 1)?.checked_add(w)?;
            (strides[i] >= w).then_some(())?;
            data.get(offsets[i]..offsets[i].checked_add(len)?)
        };
        let (y, u, v) = (plane(0, width, height)?, plane(1, cw, ch)?, plane(2, cw, ch)?);
        let pixels = Pixels::I420 { y, u, v, y_stride: strides[0], c_stride: strides[1], matrix };
        Some(ImageView { width, height, pixels })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The bytes, by layout.
    pub fn pixels(&self) -> &Pixels<'a> {
        &self.pixels
    }

    /// One packed RGB row of `3·width` bytes; `None` for planar pictures.
    #[inline]
    pub fn rgb_row(&self, y: usize) -> Option<&'a [u8]> {
        match self.pixels {
            Pixels::Rgb { data, stride } => Some(&data[y * stride..y * stride + self.width * 3]),
            Pixels::I420 { .. } => None,
        }
    }

    /// One pixel as RGB (black outside the picture).
    pub fn rgb_at(&self, x: usize, y: usize) -> [u8; 3] {
        if x >= self.width || y >= self.height {
            return [0; 3];
        }
        match self.pixels {
            Pixels::Rgb { .. } => {
                self.rgb_row(y).and_then(|row| row.get(x * 3..x * 3 + 3)).map_or([0; 3], |p| [p[0], p[1], p[2]])
            }
            Pixels::I420 { y: luma, u, v, y_stride, c_stride, matrix } => {
                let c = (y / 2) * c_stride + x / 2;
                let (Some(&l), Some(&cu), Some(&cv)) = (luma.get(y * y_stride + x), u.get(c), v.get(c)) else {
                    return [0; 3];
                };
                matrix.rgb(f32::from(l), f32::from(cu), f32::from(cv)).map(|k| k.round().clamp(0.0, 255.0) as u8)
            }
        }
    }

    /// A packed RGB copy (for stills, snapshots and tests; frames are never converted on
    /// the way to the models).
    pub fn to_rgb(&self) -> RgbImage {
        let mut data = Vec::with_capacity(self.width * self.height * 3);
        for y in 0..self.height {
            match self.pixels {
                Pixels::Rgb { .. } => data.extend_from_slice(self.rgb_row(y).unwrap_or_default()),
                Pixels::I420 { y: luma, u, v, y_stride, c_stride, matrix } => {
                    for x in 0..self.width {
                        let c = (y / 2) * c_stride + x / 2;
                        let rgb = matrix.rgb(f32::from(luma[y * y_stride + x]), f32::from(u[c]), f32::from(v[c]));
                        data.extend(rgb.map(|k| k.round().clamp(0.0, 255.0) as u8));
                    }
                }
            }
        }
        RgbImage { data, width: self.width, height: self.height }
    }
}

/// An owned packed RGB image (stride = 3·width), for stills and tests.
#[derive(Debug, Clone)]
pub struct RgbImage {
    /// Packed pixels, row after row.
    pub data: Vec<u8>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl RgbImage {
    /// Borrows the image.
    pub fn view(&self) -> ImageView<'_> {
        let pixels = Pixels::Rgb { data: &self.data, stride: self.width * 3 };
        ImageView { width: self.width, height: self.height, pixels }
    }
}

/// An axis-aligned box in pixels (or any unit both sides agree on); origin top-left.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

impl Rect {
    /// Builds a box from its centre and size.
    pub fn from_center(cx: f32, cy: f32, w: f32, h: f32) -> Rect {
        Rect { x: cx - w / 2.0, y: cy - h / 2.0, w, h }
    }

    /// Area (zero for degenerate boxes).
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// Intersection over union, 0 when they do not touch.
    pub fn iou(&self, other: &Rect) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// Scales width and height about the centre (e.g. 1.2 for a margin).
    pub fn scaled(&self, sx: f32, sy: f32) -> Rect {
        Rect::from_center(self.x + self.w / 2.0, self.y + self.h / 2.0, self.w * sx, self.h * sy)
    }

    /// The part of the box inside `0..width × 0..height`.
    pub fn clamped(&self, width: f32, height: f32) -> Rect {
        let x0 = self.x.clamp(0.0, width);
        let y0 = self.y.clamp(0.0, height);
        let x1 = (self.x + self.w).clamp(0.0, width);
        let y1 = (self.y + self.h).clamp(0.0, height);
        Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
    }

    /// Whether the point lies inside the box.
    #[inline]
    pub fn contains(&self, px: f32, py: f32) -> bool {
        px >= self.x && px < self.x + self.w && py >= self.y && py < self.y + self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = Rect { x: 0.0, y: 0.0, w: 10.0, h: 10.0 };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&Rect { x: 20.0, y: 0.0, w: 5.0, h: 5.0 }), 0.0);
        let half = Rect { x: 5.0, y: 0.0, w: 10.0, h: 10.0 };
        assert!((a.iou(&half) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn view_rejects_short_buffers() {
        assert!(ImageView::new(&[0u8; 11], 2, 2, 6).is_none());
        assert!(ImageView::new(&[0u8; 12], 2, 2, 6).is_some());
    }
}

#[cfg(test)]
mod yuv_tests {
    use super::*;

    #[test]
    fn textbook_bt601_and_bt709_values() {
        // Within one level: the textbook YUV triples are themselves rounded.
        let near =
            |got: [f32; 3], want: [f32; 3]| got.iter().zip(want).all(|(g, w)| (g.clamp(0.0, 255.0) - w).abs() <= 1.0);
        assert!(near(YuvMatrix::BT601.rgb(16.0, 128.0, 128.0), [0.0, 0.0, 0.0]));
        assert!(near(YuvMatrix::BT601.rgb(235.0, 128.0, 128.0), [255.0, 255.0, 255.0]));
        assert!(near(YuvMatrix::BT601.rgb(81.0, 90.0, 240.0), [255.0, 0.0, 0.0]), "BT.601 red");
        assert!(near(YuvMatrix::BT709.rgb(63.0, 102.0, 240.0), [255.0, 0.0, 0.0]), "BT.709 red");
        assert!(!near(YuvMatrix::BT709.rgb(81.0, 90.0, 240.0), [255.0, 0.0, 0.0]), "the matrices differ");
        let full = YuvMatrix { full_range: true, ..YuvMatrix::BT601 };
        assert!(near(full.rgb(0.0, 128.0, 128.0), [0.0, 0.0, 0.0]));
        assert!(near(full.rgb(255.0, 128.0, 128.0), [255.0, 255.0, 255.0]));
    }

    #[test]
    fn an_i420_view_checks_its_planes_and_converts() {
        // 4x2 picture: Y plane 4x2, U and V 2x1, packed back to back.
        let mut data = vec![235u8; 8];
        data.extend([128, 128, 128, 128]);
        let view = ImageView::i420(&data, 4, 2, [0, 8, 10], [4, 2, 2], YuvMatrix::BT601).unwrap();
        assert_eq!(view.to_rgb().data, vec![255; 24]);
        assert!(ImageView::i420(&data, 4, 4, [0, 8, 10], [4, 2, 2], YuvMatrix::BT601).is_none(), "too short");
    }
}
