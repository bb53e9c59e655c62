//! `http.blur_faces`: what is inside a face's box is blurred before a picture is encoded
//! for viewers, strongly enough that the person cannot be recognised (three box-blur
//! passes each way, close to a Gaussian, with a radius of a fifth of the box's smaller
//! side), while the scene around stays readable. Only the pictures shown change: the
//! analysis has already run on the frame.

use std::ops::Range;

/// Three passes of a box blur make a kernel close to a Gaussian.
const PASSES: usize = 3;

/// Blurs `[x0, y0, x1, y1)` (clipped to the picture) of packed RGB `data`, `width` by
/// `height`, in place.
pub fn blur(data: &mut [u8], width: usize, height: usize, [x0, y0, x1, y1]: [usize; 4]) {
    let (x1, y1) = (x1.min(width), y1.min(height));
    if x1 <= x0 + 1 || y1 <= y0 + 1 || data.len() < width * height * 3 {
        return;
    }
    let radius = ((x1 - x0).min(y1 - y0) / 5).max(2);
    let mut line = Line { values: Vec::with_capacity((x1 - x0).max(y1 - y0)), scratch: Vec::new(), radius };
    for _ in 0..PASSES {
        line.pass(data, y0..y1, x0..x1, |y, x| (y * width + x) * 3);
        line.pass(data, x0..x1, y0..y1, |x, y| (y * width + x) * 3);
    }
}

/// One line of pixels being smoothed, and the room to do it.
struct Line {
    values: Vec<u8>,
    scratch: Vec<u8>,
    radius: usize,
}

impl Line {
    /// Smooths each line in `lines` over its pixels `along`, each colour apart; `at(line,
    /// i)` is where the `i`th pixel of a line starts in `data` (rows or columns alike).
    fn pass(&mut self, data: &mut [u8], lines: Range<usize>, along: Range<usize>, at: impl Fn(usize, usize) -> usize) {
        for l in lines {
            for c in 0..3 {
                self.values.clear();
                self.values.extend(along.clone().map(|i| data[at(l, i) + c]));
                smooth(&mut self.values, &mut self.scratch, self.radius);
                for (i, v) in along.clone().zip(&self.values) {
                    data[at(l, i) + c] = *v;
                }
            }
        }
    }
}

/// The running mean of `line` over `2 * radius + 1` values, the edges repeated.
fn smooth(line: &mut [u8], scratch: &mut Vec<u8>, radius: usize) {
    let n = line.len();
    if n == 0 {
        return;
    }
    scratch.clear();
    scratch.extend_from_slice(line);
    let at = |i: isize| u32::from(scratch[i.clamp(0, n as isize - 1) as usize]);
    let r = radius as isize;
    let span = 2 * radius as u32 + 1;
    let mut sum: u32 = (-r..=r).map(at).sum();
    for (i, out) in line.iter_mut().enumerate() {
        *out = ((sum + span / 2) / span) as u8;
        let i = i as isize;
        sum = sum + at(i + r + 1) - at(i - r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkerboard of 1-pixel squares, 0 and 200, on a flat grey border.
    fn board(w: usize, h: usize) -> Vec<u8> {
        let mut data = vec![100u8; w * h * 3];
        for y in 10..50 {
            for x in 10..50 {
                let v = if (x + y) % 2 == 0 { 0 } else { 200 };
                data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[v, v, v]);
            }
        }
        data
    }

    #[test]
    fn only_the_box_is_smoothed_and_flat_areas_stay_as_they_are() {
        let (w, h) = (64, 64);
        let mut data = board(w, h);
        let before = data.clone();
        blur(&mut data, w, h, [10, 10, 50, 50]);
        let px = |d: &[u8], x: usize, y: usize| d[(y * w + x) * 3];
        // Inside: the pattern is gone, its mean (100) stays.
        for (x, y) in [(20, 20), (30, 31), (45, 12)] {
            assert!(px(&data, x, y).abs_diff(100) <= 8, "({x}, {y}): {}", px(&data, x, y));
        }
        // Outside: untouched.
        for (x, y) in [(5, 5), (55, 30), (30, 60), (9, 30), (50, 30)] {
            assert_eq!(px(&data, x, y), px(&before, x, y), "({x}, {y})");
        }
    }

    #[test]
    fn boxes_past_the_edges_are_clipped_and_empty_ones_ignored() {
        let (w, h) = (64, 64);
        let mut data = board(w, h);
        blur(&mut data, w, h, [40, 40, 500, 500]);
        blur(&mut data, w, h, [30, 30, 30, 40]);
        blur(&mut data[..10], w, h, [0, 0, 10, 10]);
        assert_eq!(data.len(), w * h * 3);
    }
}
