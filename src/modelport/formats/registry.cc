// The format table and detection.
#include <algorithm>
#include <filesystem>

#include "modelport/formats/format.h"
#include "modelport/formats/gguf/gguf.h"
#include "modelport/formats/keras/keras.h"
#include "modelport/formats/numpy/numpy.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "modelport/formats/tf/bundle.h"
#include "modelport/formats/tf/saved_model.h"
#include "modelport/formats/tfjs/tfjs.h"
#include "modelport/formats/tflite/tflite.h"
#include "modelport/formats/torch/torch.h"

namespace mp {
namespace {

const std::vector<FormatDescriptor>& Table() {
  static const std::vector<FormatDescriptor> kFormats = {
      {
          .name = "safetensors",
          .extensions = {".safetensors"},
          .caps = {.read = true, .write = true, .zero_copy = true, .sharded = true},
          .detect_bytes = 16,
          .detect = safetensors::Detect,
          .detect_dir = safetensors::DetectDir,
          .open = safetensors::Open,
          .write = safetensors::Write,
      },
      {
          .name = "gguf",
          .extensions = {".gguf"},
          .caps = {.read = true, .write = true, .zero_copy = true, .sharded = true},
          .detect_bytes = 4,
          .detect = gguf::Detect,
          .detect_dir = gguf::DetectDir,
          .open = gguf::Open,
          .write = gguf::Write,
      },
      {
          .name = "torch",
          .extensions = {".pt", ".pth", ".bin", ".ckpt"},
          // Hugging Face shards both ways (pytorch_model.bin.index.json).
          .caps = {.read = true, .write = true, .zero_copy = true, .sharded = true},
          .detect_bytes = torch::kDetectBytes,
          .detect = torch::Detect,
          .detect_dir = torch::DetectDir,
          .open = torch::Open,
          .write = torch::Write,
      },
      {
          // .npz first: a model of several tensors; .npy holds exactly one.
          .name = "numpy",
          .extensions = {".npz", ".npy"},
          .caps = {.read = true, .write = true, .zero_copy = true, .sharded = false},
          .detect_bytes = numpy::kDetectBytes,
          .detect = numpy::Detect,
          .detect_dir = nullptr,
          .open = numpy::Open,
          .write = numpy::Write,
      },
      {
          // A flatbuffer with the file identifier "TFL3" at bytes 4..8. Read only: constant
          // tensors zero-copy, quantization parameters in the metadata.
          .name = "tflite",
          .extensions = {".tflite"},
          .caps = {.read = true, .write = false, .zero_copy = true, .sharded = false},
          .detect_bytes = tflite::kDetectBytes,
          .detect = tflite::Detect,
          .detect_dir = nullptr,
          .open = tflite::Open,
          .write = nullptr,
      },
      {
          // Keras weights in HDF5: Keras 2 layouts (full model, save_weights) and the Keras 3
          // .weights.h5 layout read; written as Keras 3 for *.weights.h5, else Keras 2.
          .name = "keras_h5",
          .extensions = {".weights.h5", ".h5", ".hdf5"},
          .caps = {.read = true, .write = true, .zero_copy = true, .sharded = false},
          .detect_bytes = keras::kDetectBytes,
          .detect = keras::DetectH5,
          .detect_dir = nullptr,
          .open = keras::OpenH5,
          .write = keras::WriteH5,
      },
      {
          // .keras archives (zip of metadata.json, config.json, model.weights.h5). Writing
          // needs a Keras config from the source (keras::WriteKeras refuses without one), so
          // caps.write stays off: the conformance suite writes config-less models.
          // Written only from a model that carries a Keras config (keras.config: read from a
          // .keras or a full-model .h5); anything else is refused, suggesting .weights.h5.
          .name = "keras",
          .extensions = {".keras"},
          .caps = {.read = true, .write = true, .zero_copy = true, .sharded = false},
          .detect_bytes = keras::kDetectBytes,
          .detect = keras::DetectKeras,
          .detect_dir = nullptr,
          .open = keras::OpenKeras,
          .write = keras::WriteKeras,
      },
      {
          // Before onnx: saved_model.pb starts like an ONNX file (field 1 varint, field 2).
          // No generic writer: a SavedModel needs a graph; tf::SaveWithVariables rewrites one.
          .name = "saved_model",
          .extensions = {"saved_model.pb"},
          .caps = {.read = true, .write = false, .zero_copy = true, .sharded = true},
          .detect_bytes = tf::kSavedModelDetectBytes,
          .detect = tf::DetectSavedModel,
          .detect_dir = tf::DetectSavedModelDir,
          .open = tf::OpenSavedModel,
          .write = nullptr,
      },
      {
          // TF checkpoints and SavedModel variables: PREFIX.index + PREFIX.data-*-of-*.
          .name = "tf_bundle",
          .extensions = {".index"},
          .caps = {.read = true, .write = true, .zero_copy = true, .sharded = true},
          .detect_bytes = tf::kDetectBytes,
          .detect = tf::Detect,
          .detect_dir = tf::DetectDir,
          .open = tf::Open,
          .write = tf::Write,
      },
      {
          // TensorFlow.js: model.json (a JSON object with "weightsManifest") + weight shards.
          // Tensors inside one shard are zero-copy; ones spanning shards are assembled.
          .name = "tfjs",
          .extensions = {"model.json"},
          .caps = {.read = true, .write = true, .zero_copy = true, .sharded = true},
          .detect_bytes = tfjs::kDetectBytes,
          .detect = tfjs::Detect,
          .detect_dir = tfjs::DetectDir,
          .open = tfjs::Open,
          .write = tfjs::Write,
      },
      {
          // No generic writer: an ONNX file needs a graph, which tensors alone do not give, so
          // convert refuses ("writing onnx is not supported"). ONNX models are rewritten from
          // an ONNX model (OnnxSource::Rewrite, `modelport onnx`). Raw initializer data is
          // zero-copy; typed fields are decoded.
          .name = "onnx",
          .extensions = {".onnx"},
          .caps = {.read = true, .write = false, .zero_copy = true, .sharded = false},
          .detect_bytes = onnx::kDetectBytes,
          .detect = onnx::Detect,
          .detect_dir = nullptr,
          .open = onnx::Open,
          .write = nullptr,
      },
  };
  return kFormats;
}

const FormatDescriptor* ByExtension(const std::string& path) {
  for (const auto& f : Table()) {
    for (auto ext : f.extensions) {
      if (path.ends_with(ext)) return &f;
    }
  }
  // "model.safetensors.index.json" and friends: the format name before ".index.json".
  for (const auto& f : Table()) {
    for (auto ext : f.extensions) {
      if (path.ends_with(std::string(ext) + ".index.json")) return &f;
    }
  }
  return nullptr;
}

}  // namespace

std::span<const FormatDescriptor> Formats() { return Table(); }

Result<const FormatDescriptor*> FindFormat(std::string_view name) {
  for (const auto& f : Table()) {
    if (f.name == name) return &f;
  }
  std::string known;
  for (const auto& f : Table()) known += (known.empty() ? "" : ", ") + std::string(f.name);
  return InvalidArgument("unknown format '" + std::string(name) + "' (known: " + known + ")");
}

Result<const FormatDescriptor*> DetectFormat(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) return NotFound(path + ": no such file or folder");
  if (fs::is_directory(status)) {
    for (const auto& f : Table()) {
      if (f.detect_dir && f.detect_dir(path)) return &f;
    }
    return Unsupported(path + ": folder holds no model modelport recognises");
  }
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, IoMode::kPread));
  size_t need = 0;
  for (const auto& f : Table()) need = std::max(need, f.detect_bytes);
  const size_t n = static_cast<size_t>(std::min<uint64_t>(need, file->size()));
  std::vector<uint8_t> prefix(n);
  MP_RETURN_IF_ERROR(file->ReadInto(0, n, prefix.data()));
  for (const auto& f : Table()) {
    const size_t take = std::min(n, f.detect_bytes);
    if (f.detect(std::span<const uint8_t>(prefix.data(), take), file->size())) return &f;
  }
  if (const FormatDescriptor* f = ByExtension(path)) return f;
  return Unsupported(path +
                     ": unrecognised format (neither the content nor the extension "
                     "matches a known format)");
}

Result<const FormatDescriptor*> FormatForOutput(const std::string& path, std::string_view to) {
  if (!to.empty()) return FindFormat(to);
  if (const FormatDescriptor* f = ByExtension(path)) return f;
  return InvalidArgument(path + ": cannot tell the output format from the extension; use --to");
}

Result<std::unique_ptr<ModelSource>> OpenModel(const std::string& path,
                                               const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(const FormatDescriptor* format, DetectFormat(path));
  if (!format->caps.read)
    return Unsupported(path + ": reading " + std::string(format->name) + " is not supported");
  return format->open(path, options);
}

}  // namespace mp
