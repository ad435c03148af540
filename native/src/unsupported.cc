// Not Linux: the addon builds but offers nothing; the TS loader reports the platform.
#include <napi.h>

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("unsupported", Napi::String::New(env, "linesight's native addon needs Linux (GPIO character device, V4L2)"));
  return exports;
}

NODE_API_MODULE(linesight_native, Init)
