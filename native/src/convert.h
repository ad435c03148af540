// Pixel conversions done by the capture thread straight out of the driver's mmap buffer, so a frame
// reaches JS with one pass over its pixels (the conversion is the copy).
#pragma once

#include <linux/videodev2.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace linesight {

enum class Target { Gray, Rgb, Raw };

inline std::string FourccString(uint32_t f) {
  std::string s(4, ' ');
  for (int i = 0; i < 4; i++) s[i] = char((f >> (8 * i)) & 0xff);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

inline uint32_t FourccFromString(const std::string& s) {
  char c[4] = {' ', ' ', ' ', ' '};
  for (size_t i = 0; i < 4 && i < s.size(); i++) c[i] = s[i];
  return v4l2_fourcc(c[0], c[1], c[2], c[3]);
}

/** Whether `fourcc` converts to gray/rgb natively. */
inline bool CanConvert(uint32_t fourcc) {
  return fourcc == V4L2_PIX_FMT_YUYV || fourcc == V4L2_PIX_FMT_GREY || fourcc == V4L2_PIX_FMT_RGB24;
}

inline uint8_t Clip(int v) { return v < 0 ? 0 : v > 255 ? 255 : uint8_t(v); }

/**
 * BT.601 limited-range YCbCr -> RGB, integer (the matrix ffmpeg's swscale uses by default for
 * yuyv422 -> rgb24).
 */
inline void YuvToRgb(int y, int u, int v, uint8_t* out) {
  int c = 298 * (y - 16) + 128, d = u - 128, e = v - 128;
  out[0] = Clip((c + 409 * e) >> 8);
  out[1] = Clip((c - 100 * d - 208 * e) >> 8);
  out[2] = Clip((c + 516 * d) >> 8);
}

/** Limited-range luma (16..235) -> full-range gray (0..255): the gray a neutral RGB pixel would have. */
inline uint8_t YToGray(int y) { return Clip((298 * (y - 16) + 128) >> 8); }

/** RGB -> luma, BT.601 weights (what a gray-colour source gives for an RGB camera). */
inline uint8_t Luma(const uint8_t* p) { return uint8_t((77 * p[0] + 150 * p[1] + 29 * p[2] + 128) >> 8); }

/** Bytes of the converted frame, 0 when the conversion is not supported. */
inline size_t ConvertedSize(uint32_t fourcc, Target t, uint32_t w, uint32_t h, size_t bytesUsed) {
  if (t == Target::Raw) return bytesUsed;
  if (!CanConvert(fourcc)) return 0;
  return size_t(w) * h * (t == Target::Gray ? 1 : 3);
}

/**
 * Convert one frame. YUYV is taken as BT.601 limited range (what UVC cameras and ffmpeg's default
 * assume): gray is its luma expanded to full range, rgb the BT.601 matrix. `src` holds `h` rows of `stride` bytes. Returns false when the source is too
 * short (a truncated frame) or the conversion is unsupported.
 */
inline bool ConvertFrame(const uint8_t* src, size_t srcLen, uint32_t fourcc, uint32_t w, uint32_t h, uint32_t stride,
                         Target t, uint8_t* dst) {
  if (t == Target::Raw) {
    std::memcpy(dst, src, srcLen);
    return true;
  }
  uint32_t bpp = fourcc == V4L2_PIX_FMT_YUYV ? 2 : fourcc == V4L2_PIX_FMT_GREY ? 1 : fourcc == V4L2_PIX_FMT_RGB24 ? 3 : 0;
  if (bpp == 0) return false;
  if (stride < w * bpp) stride = w * bpp;
  if (h == 0 || size_t(stride) * (h - 1) + size_t(w) * bpp > srcLen) return false;
  if (fourcc == V4L2_PIX_FMT_YUYV && (w & 1)) return false;
  for (uint32_t row = 0; row < h; row++) {
    const uint8_t* s = src + size_t(row) * stride;
    if (t == Target::Gray) {
      uint8_t* d = dst + size_t(row) * w;
      if (fourcc == V4L2_PIX_FMT_GREY) {
        std::memcpy(d, s, w);
      } else if (fourcc == V4L2_PIX_FMT_YUYV) {
        for (uint32_t x = 0; x < w; x++) d[x] = YToGray(s[2 * x]);
      } else {
        for (uint32_t x = 0; x < w; x++) d[x] = Luma(s + 3 * x);
      }
    } else {
      uint8_t* d = dst + size_t(row) * w * 3;
      if (fourcc == V4L2_PIX_FMT_GREY) {
        for (uint32_t x = 0; x < w; x++) d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = s[x];
      } else if (fourcc == V4L2_PIX_FMT_YUYV) {
        for (uint32_t x = 0; x < w; x += 2) {
          const uint8_t* q = s + 2 * x;  // Y0 U Y1 V
          YuvToRgb(q[0], q[1], q[3], d + 3 * x);
          YuvToRgb(q[2], q[1], q[3], d + 3 * x + 3);
        }
      } else {
        std::memcpy(d, s, size_t(w) * 3);
      }
    }
  }
  return true;
}

}  // namespace linesight
