#include "ailb/bootstrap.h"

int main(int argc, char** argv) { return ailb::RunMain(argc, argv); }
