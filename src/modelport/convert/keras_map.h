// Layer mappings between PyTorch and TensorFlow/Keras weight conventions (docs/FORMATS.md,
// "PyTorch <-> Keras weights").
//
// A declarative rule table holds one entry per layer kind: the torch parameter names and ranks,
// the Keras weight names and ranks, and for each direction which tensors each output is made of
// and by which transform (transpose, OIHW <-> HWIO, gate reordering, bias sums...).
//
// Names: torch "features.0.weight" is parameter "weight" of module "features.0"; Keras
// "features.0/kernel" is weight "kernel" of layer "features.0" (the first path component; the
// weight's short name is the last one). A module keeps its name as the Keras layer name and back.
// Recurrent layers carry their cell level: "lstm/lstm_cell/kernel", "gru/gru_cell/kernel",
// "rnn/simple_rnn_cell/kernel" (the Keras 2 H5 weight names without ":0").
//
// Kinds are inferred from the tensors (parameter names and ranks); where they cannot tell (a
// rank-2 weight without bias: linear or embedding; a conv weight with one input channel per group:
// conv or depthwise) the caller names the kind (MapOptions::layers, `--layer MODULE=KIND`).
// Tensors that no rule maps are carried over unchanged and listed in the report.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"

namespace mp {

enum class MapDirection : uint8_t { kTorchToKeras, kKerasToTorch };

/// "torch-to-keras" or "keras-to-torch".
std::string_view MapDirectionName(MapDirection direction);
/// Parses a direction name; InvalidArgument naming both choices otherwise.
Result<MapDirection> ParseMapDirection(std::string_view text);

enum class LayerKind : uint8_t {
  kLinear,         ///< torch Linear <-> Keras Dense
  kConv,           ///< Conv1d/2d/3d <-> Conv1D/2D/3D (torch O,I,[D,]H,W <-> Keras [D,]H,W,I,O)
  kConvTranspose,  ///< ConvTranspose1d/2d/3d <-> Conv*DTranspose (I,O,... <-> ...,O,I)
  kDepthwise,      ///< Conv1d/2d with groups = in_channels <-> DepthwiseConv1D/2D
  kBatchNorm,      ///< BatchNorm1d/2d/3d <-> BatchNormalization
  kLayerNorm,      ///< LayerNorm <-> LayerNormalization
  kEmbedding,      ///< Embedding <-> Embedding
  kLstm,           ///< LSTM (one layer, one direction) <-> LSTM
  kGru,            ///< GRU (one layer, one direction) <-> GRU(reset_after=True)
  kRnn,            ///< RNN (tanh, one layer) <-> SimpleRNN
};

/// "linear", "conv", "conv_transpose", "depthwise", "batchnorm", "layernorm", "embedding",
/// "lstm", "gru", "rnn".
std::string_view LayerKindName(LayerKind kind);

/// A kind chosen by the caller for one module/layer.
struct LayerChoice {
  LayerKind kind = LayerKind::kLinear;
  /// Depthwise, torch -> Keras: the channel multiplier (torch out_channels / groups), which the
  /// weight [C*M, 1, ...] alone cannot tell. Keras -> torch reads it from the kernel.
  uint64_t depth_multiplier = 1;
};

/// Parses a kind as `--layer` takes it: a LayerKindName, or "depthwise:M" with M >= 1.
/// InvalidArgument listing the kinds otherwise.
Result<LayerChoice> ParseLayerChoice(std::string_view text);

struct MapOptions {
  MapDirection direction = MapDirection::kTorchToKeras;
  /// Kinds named by the caller, by module (torch) or layer (Keras) name; they override the
  /// inference. Every name must be a module/layer of the source (NotFound otherwise).
  std::map<std::string, LayerChoice> layers;
};

/// Adds one "MODULE=KIND" (`--layer`) to `options`. InvalidArgument for a malformed pair, an
/// unknown kind, or a module named twice with different kinds.
Status AddLayerOption(std::string_view text, MapOptions* options);
/// Adds every entry of a JSON file {"MODULE": "KIND", ...} (`--map-file`). NotFound/IoError for
/// the file; InvalidArgument (naming the file) for malformed JSON, a non-string kind or an
/// unknown kind.
Status AddLayerMapFile(const std::string& path, MapOptions* options);

/// One line of the mapping report: an output tensor and what it was made of, or a source tensor
/// with no output (target empty: dropped by a rule, e.g. num_batches_tracked towards Keras).
struct MappedTensor {
  std::vector<std::string> sources;  ///< source tensor names (empty for made-up tensors)
  std::string target;                ///< output tensor name; empty when dropped
  std::string kind;                  ///< LayerKindName of its rule; empty for an unmapped tensor
  std::string transform;             ///< what was done, e.g. "transpose [out, in] -> [in, out]"
};

/// What MapLayers did: one entry per output tensor, in output order, with dropped source tensors
/// among their module's entries; unmapped tensors appear with an empty kind and in `unmapped`.
struct MapReport {
  MapDirection direction = MapDirection::kTorchToKeras;
  std::vector<MappedTensor> tensors;
  /// Source tensors carried over unchanged, each with why no rule took it.
  std::vector<std::pair<std::string, std::string>> unmapped;
  std::vector<std::string> notes;  ///< whole-model remarks (e.g. tied tensors)

  /// {"direction", "tensors": [{"sources", "target" (null when dropped), "kind" (null when
  /// unmapped), "transform"}], "unmapped": [{"name", "reason"}], "mapped", "notes"}.
  Json ToJson() const;
};

/// A view of `source` renamed and re-laid out into the other framework's convention, computed
/// lazily tensor by tensor as a writer loads it. `source` must outlive the view. Fills
/// `*report` (which need not outlive the view). Errors, each naming the module/layer:
/// InvalidArgument when a kind cannot be told from the tensors and `options` does not name it, or
/// a named kind does not fit the tensors; Unsupported for multi-layer or bidirectional recurrent
/// modules and Keras GRU with reset_after=False; NotFound for an options.layers name that is no
/// module/layer of `source`; InvalidArgument when two outputs would share a name.
Result<std::unique_ptr<ModelSource>> MapLayers(const ModelSource& source, const MapOptions& options,
                                               MapReport* report);

}  // namespace mp
