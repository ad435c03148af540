{
  "variables": {
    # 1 when the C++ compiler finds jpeglib.h (Debian: libjpeg62-turbo-dev): src/jpeg.cc is built
    # and linked with -ljpeg. Without it the addon builds all the same and reports the JPEG decoder
    # as unavailable (native/README.md).
    "has_jpeglib%": "<!(printf '%s\\n' '#include <stdio.h>' '#include <jpeglib.h>' | ${CXX:-c++} -E -x c++ - >/dev/null 2>&1 && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "linesight_native",
      "conditions": [
        ["OS=='linux'", {
          "sources": ["src/addon.cc", "src/gpio.cc", "src/v4l2.cc", "src/notify.cc", "src/resize.cc"]
        }, {
          "sources": ["src/unsupported.cc"]
        }],
        ["OS=='linux' and has_jpeglib==1", {
          "sources": ["src/jpeg.cc"],
          "defines": ["LINESIGHT_JPEG=1"],
          "libraries": ["-ljpeg"]
        }]
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lpthread"]
    }
  ]
}
