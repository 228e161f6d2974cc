FROM node:20-alpine AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc npm ci --omit=dev

FROM node:20-alpine AS build
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY . .
RUN npm run build

FROM nginx:1.25-alpine
LABEL org.opencontainers.image.source="https://example.com/repo" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /app/dist /usr/share/nginx/html
HEALTHCHECK --interval=30s CMD wget -qO- http://localhost/ || exit 1
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
