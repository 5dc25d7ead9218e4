// An OPC UA server written with node-opcua, for the OPC UA driver's tests: an implementation
// independent of asyncua (which the driver and the project's simulator both use).
//
//   node server.js PORT PKI_DIR
//
// Listens on 127.0.0.1:PORT with security mode None only, keeps its certificates under
// PKI_DIR, prints "listening on opc.tcp://127.0.0.1:PORT" once ready, and stops on SIGTERM
// or when its standard input closes (so a test that dies leaves no server behind).
//
// Namespace 1 holds an object "Peer" with these variables (NodeId ns=1;s=Peer.NAME,
// browse path /1:Peer/1:NAME from the Objects folder):
//   temp   Double   20 + 5*sin(t), changed every 50 ms
//   count  Int32    +1 every 50 ms
//   flag   Boolean  toggled every 50 ms
//   step   String   one of idle, heat, cool, changed every 50 ms
//   slow   Double   as temp, but sampled no faster than every 500 ms (minimumSamplingInterval),
//                   so a faster sampling interval is revised by the server

"use strict";
const path = require("path");
const {
    OPCUAServer,
    OPCUACertificateManager,
    DataType,
    Variant,
    MessageSecurityMode,
    SecurityPolicy,
} = require("node-opcua");

async function main() {
    const port = parseInt(process.argv[2], 10);
    const pki = process.argv[3];
    if (!Number.isInteger(port) || port <= 0 || !pki) {
        console.error("usage: node server.js PORT PKI_DIR");
        process.exit(2);
    }
    const serverCertificateManager = new OPCUACertificateManager({
        automaticallyAcceptUnknownCertificate: true,
        rootFolder: path.join(pki, "pki"),
    });
    const server = new OPCUAServer({
        port,
        host: "127.0.0.1",
        hostname: "127.0.0.1",
        resourcePath: "/",
        securityModes: [MessageSecurityMode.None],
        securityPolicies: [SecurityPolicy.None],
        allowAnonymous: true,
        serverCertificateManager,
        buildInfo: {
            manufacturerName: "node-opcua peer",
            productName: "hotcell-daq test peer",
            softwareVersion: "1.0",
            buildNumber: "1",
        },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.getOwnNamespace();
    const peer = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Peer", nodeId: "s=Peer" });
    const variable = (name, dataType, value, minimumSamplingInterval) =>
        ns.addVariable({
            componentOf: peer,
            browseName: name,
            nodeId: `s=Peer.${name}`,
            dataType,
            minimumSamplingInterval,
            value: new Variant({ dataType: DataType[dataType], value }),
        });
    const temp = variable("temp", "Double", 20.0, 0);
    const count = variable("count", "Int32", 0, 0);
    const flag = variable("flag", "Boolean", false, 0);
    const step = variable("step", "String", "idle", 0);
    const slow = variable("slow", "Double", 20.0, 500);
    const steps = ["idle", "heat", "cool"];
    let n = 0;
    const timer = setInterval(() => {
        n += 1;
        const t = 20 + 5 * Math.sin(n / 10);
        temp.setValueFromSource(new Variant({ dataType: DataType.Double, value: t }));
        count.setValueFromSource(new Variant({ dataType: DataType.Int32, value: n }));
        flag.setValueFromSource(new Variant({ dataType: DataType.Boolean, value: n % 2 === 1 }));
        step.setValueFromSource(new Variant({ dataType: DataType.String, value: steps[n % steps.length] }));
        slow.setValueFromSource(new Variant({ dataType: DataType.Double, value: t }));
    }, 50);
    await server.start();
    console.log(`listening on opc.tcp://127.0.0.1:${port}`);
    let stopping = false;
    const stop = async () => {
        if (stopping) return;
        stopping = true;
        clearInterval(timer);
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    process.stdin.on("end", stop);
    process.stdin.resume();
}

main().catch((err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
});
