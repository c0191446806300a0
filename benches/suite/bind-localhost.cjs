// Copied from shared/tools/mcpbench/scripts/bind-localhost.cjs (the suite must not depend on shared/ for this).
// Preload for `node -r`: every server.listen(port[, cb]) that names no host binds 127.0.0.1
// instead of all interfaces. For Node MCP servers and bridges without a --host flag
// (supergateway 4.0.0, server-everything). Does nothing else.
const net = require('net');
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  } else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined && !args[0].host) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return orig.apply(this, args);
};
