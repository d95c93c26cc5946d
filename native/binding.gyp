{
  "targets": [
    {
      "target_name": "karlo_native",
      "sources": ["src/addon.cc", "src/gemm_conv.cc", "src/elementwise.cc", "src/peak.cc"],
      "include_dirs": ["/usr/include/x86_64-linux-gnu/openblas-pthread"],
      "cflags_cc": ["-O3", "-std=c++17", "-fopenmp", "-march=native", "-fexceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++14"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-ldnnl", "-lopenblas", "-lgomp"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
