#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <vector>
#include <random>
#include "l3_fn.inc"
int main(){ const char* s="Four score and seven years ago";
 printf("%08x %08x %08x\n", Lookup3((const uint8_t*)"",0), Lookup3((const uint8_t*)s,30), Lookup3((const uint8_t*)s,30,1));
 std::mt19937 r(5); uint32_t acc=0; std::vector<uint8_t> b(200); for(auto&x:b)x=r();
 for (size_t n=0;n<=200;++n) acc = acc*31 + Lookup3(b.data(), n, n); printf("%08x\n", acc);}
