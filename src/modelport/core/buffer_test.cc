#include "modelport/core/buffer.h"

#include <gtest/gtest.h>

namespace mp {
namespace {

// A large buffer dropped goes to Allocate's cache of mappings, and the next allocation it fits
// takes it, pages and bytes as they were (a fresh mapping would be zeros), instead of faulting
// and zeroing new pages.
TEST(Buffer, FreedLargeBuffersAreReusedByTheNextAllocationTheyFit) {
  constexpr size_t kSize = (size_t{126} << 20) - 12345;  // a size no other test allocates
  const uint8_t* first = nullptr;
  {
    auto a = Buffer::Allocate(kSize).value();
    a->mutable_data()[kSize - 1] = 7;
    first = a->data();
  }
  auto b = Buffer::Allocate(kSize - (size_t{1} << 20)).value();  // the same 126 MiB rounded
  EXPECT_EQ(b->data(), first);
  EXPECT_EQ(b->data()[kSize - 1], 7);
  // While b holds that mapping, another allocation gets a new one.
  auto c = Buffer::Allocate(kSize).value();
  EXPECT_NE(c->data(), first);
  EXPECT_EQ(c->data()[kSize - 1], 0);
}

}  // namespace
}  // namespace mp
