#include "modelport/core/status.h"

#include <gtest/gtest.h>

namespace mp {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  MP_ASSIGN_OR_RETURN(int h, Half(x));
  MP_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(Status, ContextPrefixesMessage) {
  Status s = Corrupt("bad offsets").WithContext("tensor 'w'").WithContext("a.safetensors");
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.message(), "a.safetensors: tensor 'w': bad offsets");
  EXPECT_EQ(s.ToString(), "Corrupt: a.safetensors: tensor 'w': bad offsets");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

TEST(Result, PropagatesErrorsAndValues) {
  EXPECT_EQ(*Quarter(12), 3);
  auto r = Quarter(6);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "3 is odd");
  EXPECT_EQ(r.value_or(-1), -1);
}

}  // namespace
}  // namespace mp
