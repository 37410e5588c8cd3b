/**
 * fanfare.js: a dependency-free MQTT 3.1.1 and 5.0 client for browsers, over WebSocket
 * (subprotocol "mqtt").
 *
 * A classic script sets `globalThis.Fanfare`; CommonJS gets `module.exports`; ES modules
 * import `fanfare.mjs`, which re-exports the same API.
 *
 *   const client = Fanfare.connect("ws://127.0.0.1:8080/mqtt", { persist: true });
 *   client.subscribe("scores/+", { qos: 1 }, (topic, payload) => show(Fanfare.text(payload)));
 *   await client.publish("scores/final", "6-4 3-6 7-6", { qos: 1, retain: true });
 *
 * Reconnects with exponential back-off and restores every subscription. With `persist`,
 * unacknowledged QoS 1/2 publishes are kept in localStorage and sent again after a reload.
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.Fanfare = api;
})(globalThis, function () {
  "use strict";

  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  // Packet types, MQTT 5.0 §2.1.2 (the same numbers in 3.1.1).
  const CONNECT = 1, CONNACK = 2, PUBLISH = 3, PUBACK = 4, PUBREC = 5, PUBREL = 6,
    PUBCOMP = 7, SUBSCRIBE = 8, SUBACK = 9, UNSUBSCRIBE = 10, UNSUBACK = 11,
    PINGREQ = 12, PINGRESP = 13, DISCONNECT = 14;

  /** Queued QoS 0 publishes kept while offline; older ones are dropped past this. */
  const OFFLINE_QOS0_MAX = 100;

  // MQTT 5.0 §2.2.2.2: property identifier -> [name, type]. Types: 1, 2, 4 bytes, "v"
  // variable byte integer, "s" UTF-8 string, "b" binary data, "p" string pair.
  const PROPS = {
    1: ["payloadFormatIndicator", 1],
    2: ["messageExpiryInterval", 4],
    3: ["contentType", "s"],
    8: ["responseTopic", "s"],
    9: ["correlationData", "b"],
    11: ["subscriptionIdentifier", "v"],
    17: ["sessionExpiryInterval", 4],
    18: ["assignedClientIdentifier", "s"],
    19: ["serverKeepAlive", 2],
    21: ["authenticationMethod", "s"],
    22: ["authenticationData", "b"],
    23: ["requestProblemInformation", 1],
    24: ["willDelayInterval", 4],
    25: ["requestResponseInformation", 1],
    26: ["responseInformation", "s"],
    28: ["serverReference", "s"],
    31: ["reasonString", "s"],
    33: ["receiveMaximum", 2],
    34: ["topicAliasMaximum", 2],
    35: ["topicAlias", 2],
    36: ["maximumQoS", 1],
    37: ["retainAvailable", 1],
    38: ["userProperties", "p"],
    39: ["maximumPacketSize", 4],
    40: ["wildcardSubscriptionAvailable", 1],
    41: ["subscriptionIdentifiersAvailable", 1],
    42: ["sharedSubscriptionAvailable", 1],
  };
  /** @type {Record<string, number>} */
  const PROP_IDS = {};
  for (const id in PROPS) PROP_IDS[PROPS[id][0]] = +id;

  /**
   * @param {string | Uint8Array | ArrayBuffer | ArrayBufferView | null | undefined} data
   * @returns {Uint8Array}
   */
  function bytes(data) {
    if (data == null) return new Uint8Array(0);
    if (typeof data === "string") return encoder.encode(data);
    if (data instanceof Uint8Array) return data;
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    return encoder.encode(String(data));
  }

  /** @param {Uint8Array} payload UTF-8 bytes @returns {string} */
  const text = (payload) => decoder.decode(payload);

  /** Builds a packet body byte by byte. */
  class Writer {
    constructor() { /** @type {number[]} */ this.a = []; }
    byte(x) { this.a.push(x & 255); return this; }
    u16(x) { return this.byte(x >> 8).byte(x); }
    u32(x) { return this.u16(x >>> 16).u16(x & 0xffff); }
    /** Variable byte integer, MQTT 5.0 §1.5.5. */
    vbi(x) {
      if (x > 268435455) throw new RangeError("length over 268435455");
      do {
        const digit = x % 128;
        x = Math.floor(x / 128);
        this.byte(x > 0 ? digit | 128 : digit);
      } while (x > 0);
      return this;
    }
    raw(u) { for (let i = 0; i < u.length; i++) this.a.push(u[i]); return this; }
    bin(u) {
      if (u.length > 65535) throw new RangeError("string or binary over 65535 bytes");
      return this.u16(u.length).raw(u);
    }
    str(s) { return this.bin(encoder.encode(s)); }
    /** A property list, length first (MQTT 5.0 §2.2.2). Unknown names throw. */
    props(p) {
      const w = new Writer();
      for (const name in p || {}) {
        const value = p[name];
        const id = PROP_IDS[name];
        if (value == null) continue;
        if (!id) throw new TypeError("unknown MQTT 5 property " + name);
        const type = PROPS[id][1];
        if (type === "p") {
          for (const [k, v] of Array.isArray(value) ? value : Object.entries(value)) {
            w.byte(id).str(k).str(String(v));
          }
          continue;
        }
        for (const one of type === "v" && Array.isArray(value) ? value : [value]) {
          w.byte(id);
          if (type === 1) w.byte(+one);
          else if (type === 2) w.u16(one);
          else if (type === 4) w.u32(one);
          else if (type === "v") w.vbi(one);
          else if (type === "s") w.str(one);
          else w.bin(bytes(one));
        }
      }
      return this.vbi(w.a.length).raw(w.a);
    }
    /** The whole packet: fixed header, remaining length, this body. */
    packet(type, flags) {
      const head = new Writer().byte(type << 4 | flags).vbi(this.a.length);
      return Uint8Array.from(head.a.concat(this.a));
    }
  }

  /** Reads a packet body; reading past its end throws (a malformed packet). */
  class Reader {
    /** @param {Uint8Array} u */
    constructor(u) { this.u = u; this.i = 0; }
    left() { return this.u.length - this.i; }
    byte() {
      if (this.i >= this.u.length) throw new Error("malformed packet");
      return this.u[this.i++];
    }
    u16() { return this.byte() << 8 | this.byte(); }
    u32() { return (this.u16() * 65536) + this.u16(); }
    vbi() {
      let value = 0, mult = 1, digit;
      do {
        digit = this.byte();
        value += (digit & 127) * mult;
        mult *= 128;
        if (mult > 128 ** 4) throw new Error("malformed variable byte integer");
      } while (digit & 128);
      return value;
    }
    bin() {
      const n = this.u16();
      if (n > this.left()) throw new Error("malformed packet");
      return this.u.subarray(this.i, (this.i += n));
    }
    str() { return text(this.bin()); }
    rest() { const r = this.u.subarray(this.i); this.i = this.u.length; return r; }
    props() {
      const end = this.vbi() + this.i;
      /** @type {Record<string, any>} */
      const p = {};
      while (this.i < end) {
        const id = this.byte();
        const def = PROPS[id];
        if (!def) throw new Error("unknown property " + id);
        const [name, type] = def;
        const value = type === 1 ? this.byte() : type === 2 ? this.u16() : type === 4 ? this.u32()
          : type === "v" ? this.vbi() : type === "s" ? this.str() : type === "b" ? this.bin()
          : [this.str(), this.str()];
        if (type === "p" || type === "v") (p[name] = p[name] || []).push(value);
        else p[name] = value;
      }
      if (this.i !== end) throw new Error("malformed properties");
      return p;
    }
  }

  /**
   * Whether a topic filter matches a topic name (MQTT 5.0 §4.7). A wildcard first level does
   * not match topics starting with "$" [MQTT-4.7.2-1]; "$share/group/" is ignored.
   * @param {string} filter @param {string} topic
   */
  function matches(filter, topic) {
    if (filter.startsWith("$share/")) filter = filter.split("/").slice(2).join("/");
    const f = filter.split("/"), t = topic.split("/");
    if (topic[0] === "$" && (f[0] === "+" || f[0] === "#")) return false;
    for (let i = 0; i < f.length; i++) {
      if (f[i] === "#") return true;
      if (i >= t.length || (f[i] !== "+" && f[i] !== t[i])) return false;
    }
    return f.length === t.length;
  }

  /** Base64 of bytes, for localStorage. */
  function toBase64(u) {
    let s = "";
    for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]);
    return btoa(s);
  }
  function fromBase64(s) { return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)); }

  /** A refused operation: `code` is the MQTT reason code (or 3.1.1 return code). */
  function refusal(what, code, props) {
    const e = new Error(what + " refused with code 0x" + code.toString(16));
    return Object.assign(e, { code, properties: props });
  }

  /**
   * @typedef {object} Will
   * @property {string} topic
   * @property {string | Uint8Array} [payload]
   * @property {0 | 1 | 2} [qos]
   * @property {boolean} [retain]
   * @property {object} [properties] MQTT 5 will properties (willDelayInterval, ...)
   *
   * @typedef {object} Options
   * @property {string} [clientId] default: random; empty lets the broker assign one
   * @property {boolean} [clean] clean session / clean start, default true
   * @property {number} [keepalive] seconds, default 30; 0 turns it off
   * @property {string} [username]
   * @property {string | Uint8Array} [password]
   * @property {Will} [will]
   * @property {4 | 5} [protocolVersion] 4 = MQTT 3.1.1 (default), 5 = MQTT 5.0
   * @property {object} [properties] MQTT 5 CONNECT properties (sessionExpiryInterval, ...)
   * @property {boolean} [reconnect] default true
   * @property {number} [reconnectMinMs] first delay, default 500; doubles up to reconnectMaxMs
   * @property {number} [reconnectMaxMs] default 30000
   * @property {number} [connectTimeoutMs] open to CONNACK, default 10000
   * @property {boolean | string} [persist] keep unacknowledged QoS 1/2 publishes in
   *   localStorage (a string names the storage key)
   * @property {Storage} [storage] default: localStorage
   * @property {typeof WebSocket} [WebSocket] default: the global WebSocket
   *
   * @typedef {(topic: string, payload: Uint8Array, packet: Message) => void} OnMessage
   * @typedef {{topic: string, payload: Uint8Array, qos: number, retain: boolean, dup: boolean, properties?: object}} Message
   */

  class Client {
    /** @param {string} url @param {Options} [options] */
    constructor(url, options) {
      /** @type {Options & Record<string, any>} */
      const o = (this.options = Object.assign({
        clean: true, keepalive: 30, protocolVersion: 4, reconnect: true,
        reconnectMinMs: 500, reconnectMaxMs: 30000, connectTimeoutMs: 10000,
      }, options));
      if (o.protocolVersion !== 4 && o.protocolVersion !== 5) throw new TypeError("protocolVersion must be 4 or 5");
      // MQTT 3.1.1 [MQTT-3.1.2-22]: no password without a user name.
      if (o.protocolVersion === 4 && o.password != null && o.username == null) throw new TypeError("password needs a username in MQTT 3.1.1");
      this.url = url;
      this.v5 = o.protocolVersion === 5;
      this.clientId = o.clientId != null ? o.clientId : "fanfare-" + Math.random().toString(36).slice(2, 10);
      /** @type {Map<string, {qos: number, options: object, callbacks: Set<OnMessage>, waiting: Array<[Function, Function]>}>} */
      this.subscriptions = new Map();
      /** Outgoing QoS 1/2 publishes by packet id, in publish order. */
      this.outgoing = new Map();
      /** SUBSCRIBE/UNSUBSCRIBE awaiting their ack, by packet id. */
      this.acks = new Map();
      this.offlineQos0 = [];
      this.unsubscribeLater = new Set();
      this.incomingQos2 = new Set();
      this.aliases = new Map();
      this.nextId = 1;
      this.sendWindow = 65535;
      this.handlers = {};
      this.connected = false;
      this.ended = false;
      this.attempt = 0;
      this.keepalive = o.keepalive;
      this.store = o.persist ? o.storage || globalThis.localStorage : null;
      this.storeKey = typeof o.persist === "string" ? o.persist : "fanfare:" + url + (o.clientId ? ":" + o.clientId : "");
      this.connectPacket(); // throws now on bad options, not later in a socket callback
      this.load();
      this.open();
    }

    /** @param {string} event connect, close, offline, message, error, disconnect @param {Function} fn */
    on(event, fn) { (this.handlers[event] = this.handlers[event] || []).push(fn); return this; }
    off(event, fn) { this.handlers[event] = (this.handlers[event] || []).filter((h) => h !== fn); return this; }
    emit(event, ...args) {
      for (const fn of this.handlers[event] || []) {
        try { fn(...args); } catch (e) { setTimeout(() => { throw e; }); }
      }
    }

    /**
     * Publishes; resolves on PUBACK (QoS 1), PUBCOMP (QoS 2), or once sent (QoS 0). While
     * offline, QoS 1/2 publishes wait (and persist), QoS 0 ones are queued in memory.
     * @param {string} topic @param {string | Uint8Array} payload
     * @param {{qos?: 0 | 1 | 2, retain?: boolean, properties?: object}} [opts]
     */
    publish(topic, payload, opts = {}) {
      if (!topic || /[+#\0]/.test(topic)) return Promise.reject(new TypeError("invalid topic name " + topic));
      const m = { t: topic, p: bytes(payload), q: opts.qos | 0, r: !!opts.retain, props: opts.properties };
      if (m.q === 0) {
        if (this.connected) this.send(this.publishPacket(m, false));
        else if (this.offlineQos0.push(m) > OFFLINE_QOS0_MAX) this.offlineQos0.shift();
        return Promise.resolve();
      }
      return new Promise((resolve, reject) => {
        m.id = this.newId();
        if (!m.id) return reject(new Error("no free packet identifier"));
        Object.assign(m, { s: "pub", sent: false, resolve, reject });
        this.outgoing.set(m.id, m);
        this.save();
        this.pump();
      });
    }

    /**
     * Subscribes `callback` to `filter`; resolves with the granted QoS on SUBACK. The
     * subscription is restored after every reconnect.
     * @param {string} filter
     * @param {{qos?: 0 | 1 | 2, noLocal?: boolean, retainAsPublished?: boolean, retainHandling?: 0 | 1 | 2} | OnMessage} [opts]
     * @param {OnMessage} [callback]
     * @returns {Promise<number>}
     */
    subscribe(filter, opts, callback) {
      if (typeof opts === "function") [opts, callback] = [{}, opts];
      opts = opts || {};
      let sub = this.subscriptions.get(filter);
      if (!sub) this.subscriptions.set(filter, (sub = { qos: 0, options: opts, callbacks: new Set(), waiting: [] }));
      sub.qos = opts.qos | 0;
      sub.options = opts;
      if (callback) sub.callbacks.add(callback);
      this.unsubscribeLater.delete(filter);
      const granted = new Promise((resolve, reject) => sub.waiting.push([resolve, reject]));
      if (this.connected) this.sendSubscribe([filter]);
      return granted;
    }

    /**
     * Removes `callback` (or every callback) from `filter`; unsubscribes once none is left.
     * @param {string} filter @param {OnMessage} [callback]
     */
    unsubscribe(filter, callback) {
      const sub = this.subscriptions.get(filter);
      if (sub && callback) {
        sub.callbacks.delete(callback);
        if (sub.callbacks.size) return Promise.resolve();
      }
      this.subscriptions.delete(filter);
      if (!this.connected) {
        // A clean session forgets it anyway; a kept one hears about it on reconnect.
        if (!this.options.clean) this.unsubscribeLater.add(filter);
        return Promise.resolve();
      }
      return new Promise((resolve, reject) => this.sendUnsubscribe([filter], resolve, reject));
    }

    /** Disconnects and stops reconnecting. Unacknowledged persisted publishes stay stored. */
    end() {
      this.ended = true;
      clearTimeout(this.retryTimer);
      if (this.connected) this.send(new Writer().packet(DISCONNECT, 0));
      if (this.ws) this.ws.close(1000);
      else this.emit("close");
      return Promise.resolve();
    }

    // --- connection ---

    open() {
      const WS = this.options.WebSocket || globalThis.WebSocket;
      const ws = (this.ws = new WS(this.url, "mqtt"));
      ws.binaryType = "arraybuffer";
      this.inbox = new Uint8Array(0);
      ws.onopen = () => {
        this.send(this.connectPacket());
        this.lastSent = Date.now();
      };
      ws.onmessage = (ev) => {
        try {
          this.receive(new Uint8Array(ev.data));
        } catch (e) {
          this.emit("error", e);
          ws.close(1002);
        }
      };
      ws.onerror = () => this.emit("error", new Error("WebSocket error"));
      ws.onclose = () => this.closed(ws);
      this.connectTimer = setTimeout(() => ws.close(), this.options.connectTimeoutMs);
    }

    closed(ws) {
      if (ws !== this.ws) return;
      const was = this.connected;
      this.connected = false;
      this.ws = null;
      clearTimeout(this.connectTimer);
      clearInterval(this.pingTimer);
      for (const m of this.outgoing.values()) m.sent = false;
      for (const a of this.acks.values()) if (a.unsubscribe) a.resolve();
      this.acks.clear();
      if (this.ended || !this.options.reconnect) return this.emit("close");
      this.emit("offline", { wasConnected: was });
      const o = this.options;
      const delay = Math.min(o.reconnectMaxMs, o.reconnectMinMs * 2 ** this.attempt++);
      // Jitter spreads a stadium of browsers reconnecting after a broker restart.
      this.retryTimer = setTimeout(() => this.open(), delay * (0.5 + Math.random() / 2));
    }

    send(packet) {
      if (!this.ws || this.ws.readyState !== 1) return false;
      this.ws.send(packet);
      this.lastSent = Date.now();
      return true;
    }

    connectPacket() {
      const o = this.options, will = o.will, w = new Writer();
      let flags = o.clean ? 2 : 0;
      if (will) flags |= 4 | (will.qos | 0) << 3 | (will.retain ? 32 : 0);
      if (o.password != null) flags |= 64;
      if (o.username != null) flags |= 128;
      w.str("MQTT").byte(this.v5 ? 5 : 4).byte(flags).u16(o.keepalive);
      if (this.v5) w.props(o.properties);
      w.str(this.clientId);
      if (will) {
        if (this.v5) w.props(will.properties);
        w.str(will.topic).bin(bytes(will.payload));
      }
      if (o.username != null) w.str(o.username);
      if (o.password != null) w.bin(bytes(o.password));
      return w.packet(CONNECT, 0);
    }

    publishPacket(m, dup) {
      const w = new Writer().str(m.t);
      if (m.q) w.u16(m.id);
      if (this.v5) w.props(m.props);
      return w.raw(m.p).packet(PUBLISH, (dup ? 8 : 0) | m.q << 1 | (m.r ? 1 : 0));
    }

    /** Acks with only a packet id: success, properties omitted (MQTT 5.0 §3.4.2.1). */
    ack(type, id) { this.send(new Writer().u16(id).packet(type, type === PUBREL ? 2 : 0)); }

    sendSubscribe(filters) {
      const id = this.newId();
      if (!id) return;
      const w = new Writer().u16(id);
      if (this.v5) w.props({});
      for (const f of filters) {
        const s = this.subscriptions.get(f), o = s.options;
        w.str(f).byte(s.qos | (this.v5 ? (o.noLocal ? 4 : 0) | (o.retainAsPublished ? 8 : 0) | (o.retainHandling | 0) << 4 : 0));
      }
      this.acks.set(id, { filters });
      this.send(w.packet(SUBSCRIBE, 2));
    }

    sendUnsubscribe(filters, resolve, reject) {
      const id = this.newId();
      if (!id) return reject(new Error("no free packet identifier"));
      const w = new Writer().u16(id);
      if (this.v5) w.props({});
      for (const f of filters) w.str(f);
      this.acks.set(id, { unsubscribe: true, resolve, reject });
      this.send(w.packet(UNSUBSCRIBE, 2));
    }

    /** A packet identifier not in use, or 0 when all 65535 are. */
    newId() {
      for (let n = 0; n < 65535; n++) {
        const id = this.nextId;
        this.nextId = id === 65535 ? 1 : id + 1;
        if (!this.outgoing.has(id) && !this.acks.has(id)) return id;
      }
      return 0;
    }

    /** Sends waiting QoS 1/2 publishes while the server's receive maximum allows. */
    pump() {
      if (!this.connected) return;
      let inflight = 0;
      for (const m of this.outgoing.values()) if (m.sent) inflight++;
      for (const m of this.outgoing.values()) {
        if (m.sent) continue;
        if (inflight >= this.sendWindow) break;
        m.sent = true;
        inflight++;
        if (m.s === "rel") this.ack(PUBREL, m.id);
        // [MQTT-3.3.1-1]: DUP only on a resend within the session that saw the first try.
        else this.send(this.publishPacket(m, this.sessionPresent && m.tried));
        m.tried = true;
      }
    }

    // --- incoming ---

    /** @param {Uint8Array} data */
    receive(data) {
      let buf = this.inbox.length ? concat(this.inbox, data) : data;
      for (;;) {
        if (buf.length < 2) break;
        let len = 0, mult = 1, i = 1, digit;
        do {
          if (i >= buf.length) { digit = -1; break; }
          if (i > 4) throw new Error("malformed remaining length");
          digit = buf[i++];
          len += (digit & 127) * mult;
          mult *= 128;
        } while (digit & 128);
        if (digit < 0 || buf.length < i + len) break;
        this.handle(buf[0] >> 4, buf[0] & 15, new Reader(buf.subarray(i, i + len)));
        buf = buf.subarray(i + len);
      }
      this.inbox = buf.slice();
    }

    handle(type, flags, r) {
      if (type === CONNACK) return this.onConnAck(r);
      if (!this.connected) throw new Error("packet before CONNACK");
      const v5 = this.v5;
      if (type === PUBLISH) return this.onPublish(flags, r);
      if (type === PINGRESP) return void (this.pingAt = 0);
      if (type === DISCONNECT) {
        const code = r.left() ? r.byte() : 0;
        this.emit("disconnect", { code, properties: r.left() ? r.props() : {} });
        return this.ws.close();
      }
      const id = r.u16();
      // MQTT 5.0 §3.4.2.1: reason code and properties may be left out.
      const reasonOf = () => (v5 && r.left() ? r.byte() : 0);
      if (type === PUBACK || type === PUBREC || type === PUBCOMP) {
        const code = reasonOf();
        const props = v5 && r.left() ? r.props() : undefined;
        const m = this.outgoing.get(id);
        if (type === PUBREC && code < 0x80) {
          if (m) { m.s = "rel"; this.save(); }
          return this.ack(PUBREL, id);
        }
        if (!m) return;
        this.outgoing.delete(id);
        this.save();
        if (code >= 0x80) m.reject(refusal("publish", code, props));
        else m.resolve({ reasonCode: code, properties: props });
        return this.pump();
      }
      if (type === PUBREL) {
        this.incomingQos2.delete(id);
        return this.ack(PUBCOMP, id);
      }
      const pending = this.acks.get(id);
      this.acks.delete(id);
      const props = v5 ? r.props() : undefined;
      if (type === SUBACK && pending && pending.filters) {
        pending.filters.forEach((filter, n) => {
          const code = r.byte();
          const sub = this.subscriptions.get(filter);
          if (!sub) return;
          // 3.1.1 refuses with 0x80; MQTT 5 with any code from 0x80.
          const failed = code >= 0x80;
          if (failed) this.subscriptions.delete(filter);
          for (const [resolve, reject] of sub.waiting.splice(0)) failed ? reject(refusal("subscribe", code, props)) : resolve(code);
        });
      } else if (type === UNSUBACK && pending && pending.unsubscribe) {
        const code = v5 && r.left() ? r.byte() : 0;
        code >= 0x80 ? pending.reject(refusal("unsubscribe", code, props)) : pending.resolve(code);
      }
    }

    onConnAck(r) {
      if (this.connected) throw new Error("second CONNACK");
      const sessionPresent = !!(r.byte() & 1);
      const code = r.byte();
      const props = this.v5 ? r.props() : {};
      clearTimeout(this.connectTimer);
      if (code !== 0) {
        this.emit("error", refusal("connect", code, props));
        return this.ws.close();
      }
      this.connected = true;
      this.attempt = 0;
      this.aliases.clear();
      if (props.assignedClientIdentifier) this.clientId = props.assignedClientIdentifier;
      if (props.serverKeepAlive != null) this.keepalive = props.serverKeepAlive;
      this.sendWindow = props.receiveMaximum || 65535;
      this.startPing();
      if (this.unsubscribeLater.size) {
        this.sendUnsubscribe([...this.unsubscribeLater], () => {}, () => {});
        this.unsubscribeLater.clear();
      }
      // Always subscribe again: cheap, idempotent, and it brings retained state up to date.
      if (this.subscriptions.size) this.sendSubscribe([...this.subscriptions.keys()]);
      this.sessionPresent = sessionPresent;
      this.pump();
      for (const m of this.offlineQos0.splice(0)) this.send(this.publishPacket(m, false));
      this.emit("connect", { sessionPresent, properties: props });
    }

    onPublish(flags, r) {
      const qos = flags >> 1 & 3;
      if (qos === 3) throw new Error("PUBLISH with QoS 3");
      let topic = r.str();
      const id = qos ? r.u16() : 0;
      const props = this.v5 ? r.props() : undefined;
      if (props && props.topicAlias) {
        if (topic) this.aliases.set(props.topicAlias, topic);
        else topic = this.aliases.get(props.topicAlias);
        if (!topic) throw new Error("unknown topic alias");
      }
      /** @type {Message} */
      const msg = { topic, payload: r.rest().slice(), qos, retain: !!(flags & 1), dup: !!(flags & 8), properties: props };
      // QoS 2: deliver once, however often the PUBLISH comes before its PUBREL.
      if (qos < 2 || !this.incomingQos2.has(id)) {
        if (qos === 2) this.incomingQos2.add(id);
        for (const [filter, sub] of this.subscriptions) {
          if (!matches(filter, topic)) continue;
          for (const cb of sub.callbacks) {
            try { cb(topic, msg.payload, msg); } catch (e) { setTimeout(() => { throw e; }); }
          }
        }
        this.emit("message", topic, msg.payload, msg);
      }
      if (qos) this.ack(qos === 1 ? PUBACK : PUBREC, id);
    }

    startPing() {
      clearInterval(this.pingTimer);
      this.pingAt = 0;
      const ms = this.keepalive * 1000;
      if (!ms) return;
      this.pingTimer = setInterval(() => {
        const now = Date.now();
        // No PINGRESP within a keep-alive period: the connection is dead (MQTT 5.0 §3.1.2.10).
        if (this.pingAt && now - this.pingAt >= ms) return this.ws && this.ws.close();
        if (!this.pingAt && now - this.lastSent >= ms / 2) {
          this.pingAt = now;
          this.send(new Writer().packet(PINGREQ, 0));
        }
      }, ms / 4);
    }

    // --- persistence ---

    save() {
      if (!this.store) return;
      const rows = [];
      for (const m of this.outgoing.values()) rows.push([m.id, m.t, toBase64(m.p), m.q, m.r, m.s]);
      try {
        if (rows.length) this.store.setItem(this.storeKey, JSON.stringify(rows));
        else this.store.removeItem(this.storeKey);
      } catch (e) {
        this.emit("error", e);
      }
    }

    load() {
      if (!this.store) return;
      let rows = [];
      try { rows = JSON.parse(this.store.getItem(this.storeKey) || "[]"); } catch (e) { /* a broken entry is dropped */ }
      const noop = () => {};
      for (const [id, t, p, q, r, s] of rows) {
        this.outgoing.set(id, { id, t, p: fromBase64(p), q, r, s, sent: false, tried: true, resolve: noop, reject: noop });
      }
    }
  }

  function concat(a, b) {
    const out = new Uint8Array(a.length + b.length);
    out.set(a);
    out.set(b, a.length);
    return out;
  }

  /**
   * Opens a client; it connects, and reconnects, on its own.
   * @param {string} url e.g. "ws://127.0.0.1:8080/mqtt"
   * @param {Options} [options]
   */
  function connect(url, options) { return new Client(url, options); }

  return { connect, Client, matches, text };
});
