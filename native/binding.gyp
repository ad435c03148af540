{
  "targets": [
    {
      "target_name": "linesight_native",
      "conditions": [
        ["OS=='linux'", {
          "sources": ["src/addon.cc", "src/gpio.cc", "src/v4l2.cc", "src/notify.cc"]
        }, {
          "sources": ["src/unsupported.cc"]
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
